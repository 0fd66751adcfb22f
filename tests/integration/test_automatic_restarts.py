"""When the daemon restarts a service on its own, with real processes: jittered backoff,
a slow retry out of failed, dependency restarts, memory limits and file watching."""

from __future__ import annotations

import os
import signal
import sys
import time

from tests.conftest import FAKES, free_ports, wait_until
from tests.integration.harness import Platform


def test_crashing_together_does_not_restart_in_lockstep(platform: Platform) -> None:
    for name in ("a", "b"):
        platform.add(name, args="--crash-after 0.1", backoff={"first": "200ms", "max": "2s"}, start_limit=20)
    platform.write()
    platform.svc("up")
    wait_until(lambda: min(len(platform.events("spawned", n)) for n in "ab") >= 5, timeout=30, what="a few restarts each")
    a = [r["time"] for r in platform.events("spawned", "a")][2:5]
    b = [r["time"] for r in platform.events("spawned", "b")][2:5]
    assert any(abs(x - y) > 0.03 for x, y in zip(a, b)), (a, b)


def test_failed_service_comes_back_by_itself_once_its_cause_is_fixed(platform: Platform) -> None:
    flag = platform.root / "license.key"
    port = free_ports(1)[0]
    platform.services["api"] = {
        "tier": "app", "port": port, "command": [sys.executable, str(FAKES / "needs_file.py"), str(flag), str(port)],
        "start_limit": 1, "backoff": {"first": "100ms", "max": "100ms"}, "failed_retry": "1s",
    }
    platform.write()
    result = platform.svc("up")
    assert result.returncode == 1 and "license.key is missing" in result.stderr
    failed = platform.status()["api"]
    assert failed["state"] == "failed" and failed["next_retry_at"] is not None
    flag.write_text("ok")
    platform.wait_state("api", "ready", timeout=10)


def test_dependency_restart_restarts_the_dependent_exactly_once(platform: Platform) -> None:
    platform.add("db", tier="infra", args="--delay 0.2")
    platform.add("api", on_dependency_restart="restart")
    platform.services["api"]["depends_on"] = ["db"]
    platform.add("bystander")
    platform.services["bystander"]["depends_on"] = ["db"]
    platform.write()
    assert platform.svc("up").returncode == 0
    db_pid = platform.status()["db"]["pid"]
    os.kill(db_pid, signal.SIGKILL)
    wait_until(lambda: len(platform.events("listening", "api")) >= 2, timeout=10, what="api to restart")
    db_back = platform.events("listening", "db")[1]["time"]
    api_second = platform.events("spawned", "api")[1]["time"]
    assert api_second > db_back  # after the dependency is ready again
    platform.wait_state("api", "ready")
    # exactly once: wait a few probe intervals and count again
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert len(platform.events("spawned", "api")) == 2
        time.sleep(0.1)
    assert len(platform.events("spawned", "bystander")) == 1  # did not ask for it


def test_leaking_service_is_restarted_at_its_memory_limit(platform: Platform) -> None:
    platform.add("leaky", args="--leak-mb-per-second 40", max_memory="60MB")
    platform.write()
    assert platform.svc("up").returncode == 0
    wait_until(lambda: platform.status()["leaky"]["memory_restarts"] >= 1, timeout=20, what="a memory restart")
    assert len(platform.events("spawned", "leaky")) >= 2 or platform.status()["leaky"]["restarts"] >= 1
    log = (platform.state_dir / "logs" / "leaky.log").read_text()
    assert "max_memory" in (platform.root / ".svc" / "daemon.log").read_text() or "memory" in log


def test_edited_watched_file_restarts_its_service_once(platform: Platform) -> None:
    src = platform.root / "src" / "app"
    src.mkdir(parents=True)
    watched = src / "views.py"
    watched.write_text("x = 1\n")
    (src / "notes.txt").write_text("ignored\n")
    platform.add("api", watch=["src/**/*.py"], watch_ignore=["src/**/test_*.py"])
    platform.write()
    assert platform.svc("up").returncode == 0
    (src / "notes.txt").write_text("not watched\n")
    (src / "test_views.py").write_text("ignored too\n")
    edited = time.time()
    watched.write_text("x = 2\n")
    wait_until(lambda: len(platform.events("listening", "api")) >= 2, timeout=5, what="a restart after the edit")
    second = platform.events("spawned", "api")[1]["time"]
    assert second - edited < 1.0
    platform.wait_state("api", "ready")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert len(platform.events("spawned", "api")) == 2  # once, not per file event
        time.sleep(0.1)
