"""The reference platform in miniature, with the real servers our users run.

PostgreSQL (initdb into a temporary folder, run as the `postgres` user through the
manifest's `user` key, since it refuses to run as root; ready through `pg_isready`;
stopped with SIGINT, its fast shutdown), Redis (ready through `redis-cli ping`), a
Python backend that writes a row and sets a key (tests/fakes/platform_backend.py),
and a frontend in front of it. Needs root (to switch users) and the Debian packages
postgresql and redis-server, which .ci/run installs: without them the test is skipped,
except under CI, where a skip would hide a lost check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import FAKES, free_ports, wait_until
from tests.integration.harness import Platform, platform_other_users_can_enter, port_accepts, wait_gone

PG_BIN = Path("/usr/lib/postgresql/15/bin")
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root: PostgreSQL runs as the postgres user through the manifest's `user` key"
    for tool in (PG_BIN / "initdb", PG_BIN / "postgres", PG_BIN / "pg_controldata"):
        if not tool.exists():
            return f"{tool} is not installed (apt-get install postgresql)"
    for name in ("pg_isready", "psql", "redis-server", "redis-cli"):
        if shutil.which(name) is None:
            return f"{name} is not installed (apt-get install postgresql redis-server)"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user"
    return None


@pytest.fixture
def real_platform() -> Iterator[Platform]:
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real-services test: {why}")
        pytest.skip(why)
    with platform_other_users_can_enter("svc-e2e-") as p:  # postgres must reach its data folder
        yield p


def initdb(data: Path) -> None:
    data.mkdir(mode=0o700)
    shutil.chown(data, "postgres", "postgres")
    done = subprocess.run(
        [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"],
        user="postgres", group="postgres", extra_groups=[], capture_output=True, text=True, timeout=120, cwd=data.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10).stdout.strip()


def cluster_state(data: Path) -> str:
    out = subprocess.run([str(PG_BIN / "pg_controldata"), str(data)], capture_output=True, text=True, timeout=30).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Database cluster state"))


def test_postgres_redis_backend_frontend_up_heal_and_down_cleanly(real_platform: Platform) -> None:
    platform = real_platform
    root = platform.root
    data = root / "pgdata"
    initdb(data)
    pg, redis, backend, frontend = free_ports(4)
    platform.tiers = {"infrastructure": {"order": 0}, "backend": {"order": 1}, "frontend": {"order": 2}}
    platform.supervisor["probe_interval"] = "500ms"
    platform.services = {
        "postgres": {
            "tier": "infrastructure", "port": pg, "user": "postgres", "stop_signal": "SIGINT", "stop_timeout": "20s",
            "command": [str(PG_BIN / "postgres"), "-D", str(data), "-p", "{port}", "-k", str(data),
                        "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            "ready": {"exec": "pg_isready -h 127.0.0.1 -p {port}"}, "ready_timeout": "60s",
            "url": "postgres://127.0.0.1:{port}/postgres",
        },
        "redis": {
            "tier": "infrastructure", "port": redis,
            "command": ["redis-server", "--port", "{port}", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--dir", str(root)],
            "ready": {"exec": "redis-cli -p {port} ping"},
        },
        "backend": {
            "tier": "backend", "port": backend, "depends_on": ["postgres", "redis"],
            "command": [sys.executable, str(FAKES / "platform_backend.py")],
            "env": {"REDIS_PORT": str(redis), "PG_PORT": str(pg)},
            "ready": {"http": "/health"}, "unhealthy_threshold": 4,
        },
        "frontend": {
            "tier": "frontend", "port": frontend, "depends_on": ["backend"],
            "command": [sys.executable, str(FAKES / "platform_frontend.py")],
            "env": {"BACKEND_URL": f"http://127.0.0.1:{backend}"}, "ready": {"http": "/health"},
        },
    }
    platform.write()

    # up, in order
    up = platform.svc("up", timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    status = platform.status()
    assert {n: s["state"] for n, s in status.items()} == dict.fromkeys(("postgres", "redis", "backend", "frontend"), "ready")
    assert status["backend"]["started_at"] >= max(status["postgres"]["ready_at"], status["redis"]["ready_at"])
    assert status["frontend"]["started_at"] >= status["backend"]["ready_at"]
    assert psutil.Process(status["postgres"]["pid"]).username() == "postgres"

    # the backend really used both
    assert redis_cli(redis, "GET", "backend:started") == str(status["backend"]["pid"])
    code, health = get(f"http://127.0.0.1:{frontend}/health")
    assert code == 200 and health["redis"] == "PONG" and health["postgres"] >= 1, health
    code, visit = get(f"http://127.0.0.1:{frontend}/")
    assert code == 200 and visit["rows"] >= 2 and visit["visits"] == 1, visit

    # SIGKILL Redis: noticed, restarted, and the backend's health recovers against the new one
    os.kill(status["redis"]["pid"], signal.SIGKILL)

    def redis_back() -> dict[str, Any] | None:
        s = platform.status()["redis"]
        return s if s["state"] == "ready" and s["pid"] != status["redis"]["pid"] else None

    after = wait_until(redis_back, timeout=20, interval=0.1, what="redis to be restarted")
    assert after["restarts"] == 1  # type: ignore[index]
    assert redis_cli(redis, "GET", "backend:visits") == ""  # a new, empty Redis (no persistence)
    wait_until(lambda: get(f"http://127.0.0.1:{backend}/health")[0] == 200, timeout=15, what="backend health to recover")
    wait_until(lambda: redis_cli(redis, "GET", "backend:health") != "", timeout=10,
               what="the backend's liveness probe to reach the new Redis")
    code, visit = get(f"http://127.0.0.1:{frontend}/")
    assert code == 200 and visit["visits"] == 1, visit
    final = platform.status()
    assert {s["state"] for s in final.values()} == {"ready"}, final
    assert final["postgres"]["restarts"] == 0 and final["postgres"]["pid"] == status["postgres"]["pid"]

    # down: no process, no open port, and PostgreSQL shut down cleanly (SIGINT: fast shutdown)
    tree = [p.pid for p in platform.our_processes() if p.pid != platform.daemon_pid()]
    assert len(tree) >= 6  # postgres runs several processes
    down = platform.svc("down", timeout=60)
    assert down.returncode == 0, down.stderr
    wait_gone(tree, timeout=5)
    assert [p.pid for p in platform.our_processes()] == [platform.daemon_pid()]
    assert not any(port_accepts(p) for p in (pg, redis, backend, frontend))
    assert cluster_state(data) == "shut down"
    pg_log = (platform.state_dir / "logs" / "postgres.log").read_text()
    assert "received fast shutdown request" in pg_log and "database system is shut down" in pg_log

    # the next start finds a consistent data folder: no crash recovery
    platform.svc("up", "postgres", check=True, timeout=120)
    platform.svc("down", check=True, timeout=60)
    pg_log = (platform.state_dir / "logs" / "postgres.log").read_text()
    assert pg_log.count("database system is ready to accept connections") == 2
    assert "not properly shut down" not in pg_log and "automatic recovery in progress" not in pg_log
    assert cluster_state(data) == "shut down"
