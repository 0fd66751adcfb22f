#!/usr/bin/env bash
# Install the benchmark's peers into a throwaway folder, bench/.peers (gitignored):
#   supervisord  (PyPI "supervisor")  -> bench/.peers/supervisor/bin/{supervisord,supervisorctl}
#   PM2          (npm "pm2")          -> bench/.peers/node_modules/.bin/pm2   (PM2_HOME=bench/.peers/pm2-home)
#   circus       (PyPI "circus")      -> bench/.peers/circus/bin/{circusd,circusctl}   (optional)
#   socat        (Debian, apt-get)     -> /usr/bin/socat, only when missing: the socat workloads' services
# Nothing else is installed outside bench/.peers. Re-running it is cheap; `rm -rf bench/.peers` undoes it.
#
# Usage: bench/setup_peers.sh [--no-circus] [--no-pm2] [--no-supervisord]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
peers="$here/.peers"
python="${PYTHON:-python3}"
want_supervisord=1 want_pm2=1 want_circus=1
for arg in "$@"; do
    case "$arg" in
        --no-circus) want_circus=0 ;;
        --no-pm2) want_pm2=0 ;;
        --no-supervisord) want_supervisord=0 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "setup_peers.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$peers"

# socat: the fast services of the socat workloads (a Debian package, the one thing installed system-wide)
if ! command -v socat >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "== socat (Debian)"
        apt-get install -y -qq --no-install-recommends socat >/dev/null
    else
        echo "== socat not found and no apt-get: the bench skips its socat workloads" >&2
    fi
fi

pip_venv() {  # pip_venv DIR PACKAGE...
    local dir="$1"; shift
    if [ ! -x "$dir/bin/python" ]; then
        "$python" -m venv "$dir"
    fi
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$@"
}

if [ "$want_supervisord" = 1 ]; then
    echo "== supervisord (PyPI supervisor) -> $peers/supervisor"
    pip_venv "$peers/supervisor" supervisor
    "$peers/supervisor/bin/supervisord" --version
fi

if [ "$want_pm2" = 1 ]; then
    if command -v npm >/dev/null 2>&1; then
        echo "== PM2 (npm pm2) -> $peers/node_modules"
        # --prefix keeps node_modules inside bench/.peers; no global install.
        [ -f "$peers/package.json" ] || echo '{"name": "bench-peers", "private": true}' > "$peers/package.json"
        npm install --prefix "$peers" --no-audit --no-fund --loglevel=error pm2
        mkdir -p "$peers/pm2-home"
        # (not `pm2 --version`: that would start a PM2 daemon)
        echo "pm2 $(node -p 'require(process.argv[1]).version' "$peers/node_modules/pm2/package.json")"
    else
        echo "== PM2 skipped: npm not found (install Node.js to benchmark PM2)" >&2
    fi
fi

if [ "$want_circus" = 1 ]; then
    echo "== circus (PyPI circus, optional) -> $peers/circus"
    if pip_venv "$peers/circus" circus; then
        "$peers/circus/bin/circusd" --version || true
    else
        echo "== circus failed to install; the bench skips it" >&2
    fi
fi
echo "peers installed under $peers"
