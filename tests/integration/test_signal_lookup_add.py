"""`svc signal`, the manifest lookup from a sub-folder, and `svc add`'s settings, through the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from supervisord_lite.core.manifest import load_manifest
from supervisord_lite.core.model import Kind
from tests.conftest import FAKES, free_ports, wait_until
from tests.integration.harness import Platform

SVC = Path(sys.executable).parent / "svc"


def svc_in(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed `svc`, run in ``cwd`` with no -f and no $SVC_MANIFEST (unless ``env`` sets it)."""
    environment = {k: v for k, v in os.environ.items() if k != "SVC_MANIFEST"} | (env or {})
    return subprocess.run(
        [str(SVC), *args], capture_output=True, text=True, cwd=cwd, env=environment, timeout=60, stdin=subprocess.DEVNULL
    )


def recorded(path: Path) -> list[tuple[str, int, str]]:
    if not path.exists():
        return []
    return [(role, int(pid), name) for role, pid, name in (line.split() for line in path.read_text().splitlines())]


def test_signal_reaches_the_whole_process_group_without_a_restart(platform: Platform) -> None:
    signals = platform.root / "signals.txt"
    platform.services["recorder"] = {
        "tier": "app",
        "command": [sys.executable, str(FAKES / "record_signals.py"), str(signals)],
        "ready": {"log": "^recording$"},
        "groups": ["workers"],
    }
    platform.add("site", tier="web")
    platform.write()
    platform.svc("up", "recorder", check=True)
    before = platform.status()["recorder"]

    result = platform.svc("signal", "@workers", "USR1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sent SIGUSR1 to recorder (process group {before['pid']})"
    got = wait_until(lambda: len(recorded(signals)) == 2 and recorded(signals), timeout=10, what="both processes to record it")
    assert sorted(role for role, _, name in got if name == "SIGUSR1") == ["child", "main"]  # type: ignore[union-attr]
    assert {pid for role, pid, _ in got if role == "main"} == {before["pid"]}  # type: ignore[union-attr]

    assert platform.svc("signal", "recorder", "1", check=True).returncode == 0  # by number: SIGHUP
    wait_until(lambda: sum(name == "SIGHUP" for _, _, name in recorded(signals)) == 2, timeout=10, what="SIGHUP")
    after = platform.status()["recorder"]
    assert after["state"] == "ready" and after["pid"] == before["pid"] and after["restarts"] == 0

    stopped = platform.svc("signal", "recorder", "site", "USR1")
    assert stopped.returncode == 1 and "not running, so not signalled: site" in stopped.stderr
    assert "sent SIGUSR1 to recorder" in stopped.stdout
    bad = platform.svc("signal", "recorder", "SIGNOPE")
    assert bad.returncode == 2 and '"SIGNOPE" is not a signal name' in bad.stderr
    unknown = platform.svc("signal", "recordr", "USR1")
    assert unknown.returncode == 2 and 'did you mean "recorder"?' in unknown.stderr


def test_commands_find_the_manifest_in_a_parent_folder(platform: Platform) -> None:
    port = platform.add("api", tier="app")
    platform.write()
    below = platform.root / "src" / "pkg"
    below.mkdir(parents=True)

    check = svc_in(below, "check")
    # found from the sub-folder (its free port may draw an ephemeral-range warning: that is not the point here)
    assert check.returncode == 0 and check.stdout.splitlines()[-1].startswith(f"{platform.manifest}: 1 service"), check.stdout
    up = svc_in(below, "up")
    assert up.returncode == 0, up.stderr
    status = svc_in(below, "status", "api")
    assert status.returncode == 0 and f"{port}" in status.stdout and "ready" in status.stdout
    assert svc_in(platform.root, "status").stdout.startswith("SERVICE")  # here, named svc.toml

    other = platform.root / "elsewhere.toml"
    other.write_text('[services.solo]\ncommand = "x"\n')
    by_env = svc_in(below, "check", env={"SVC_MANIFEST": str(other)})
    assert by_env.stdout.strip() == f"{other}: 1 service, no problems"  # $SVC_MANIFEST before the lookup


def test_no_manifest_anywhere_says_where_it_looked(tmp_path_factory: object) -> None:
    folder = Path(tmp_path_factory.mktemp("no-manifest")) / "deep"  # type: ignore[attr-defined]
    folder.mkdir()
    result = svc_in(folder, "status")
    assert result.returncode == 2
    assert result.stderr.strip() == f"svc: no svc.toml in {folder} or any folder above it (give one with -f PATH or $SVC_MANIFEST)"


def test_add_writes_kind_env_cwd_ready_http_and_groups(tmp_path: Path) -> None:
    manifest = tmp_path / "svc.toml"
    manifest.write_text('[services.db]\ncommand = "x"\n')
    (tmp_path / "web").mkdir()
    port = free_ports(1)[0]
    result = svc_in(
        tmp_path, "add", "api", "--command", "serve --port {port}", "--port", str(port),
        "--kind", "service", "--env", "DEBUG=1", "-e", "DSN=postgres://h/db?a=b", "--cwd", "web",
        "--ready-http", "/health", "--group", "backend", "-g", "payments",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spec = load_manifest(manifest).services["api"]
    assert spec.kind is Kind.SERVICE and spec.port == port
    assert dict(spec.env) == {"DEBUG": "1", "DSN": "postgres://h/db?a=b"}
    assert spec.cwd == tmp_path / "web"
    assert spec.ready.http == "/health" and spec.ready.tcp
    assert spec.groups == ("backend", "payments")

    task = svc_in(tmp_path, "add", "migrate", "--command", "migrate", "--kind", "oneshot", "--group", "backend")
    assert task.returncode == 0, task.stderr
    assert load_manifest(manifest).services["migrate"].kind is Kind.ONESHOT

    text = manifest.read_text()
    for bad, says in (
        (["--env", "NOVALUE"], '"NOVALUE" is not NAME=VALUE'),
        (["--ready-http", "/health"], "an http probe needs a port"),
        (["--group", "not a group"], '"not a group" is not a valid group name'),
        (["--kind", "cron"], "'cron' is not one of"),
    ):
        refused = svc_in(tmp_path, "add", "other", "--command", "x", *bad)
        assert refused.returncode == 2 and says in refused.stdout + refused.stderr, bad
    assert manifest.read_text() == text  # nothing written by a refusal


def test_signal_needs_a_daemon(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    result = platform.svc("signal", "api", signal.SIGUSR1.name)
    assert result.returncode == 3 and "no daemon is running" in result.stderr
