"""When the daemon restarts a service on its own, with real processes: jittered backoff,
a slow retry out of failed, dependency restarts, memory limits and file watching."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from tests.conftest import FAKES, wait_until
from tests.integration.harness import Platform, gone, wait_gone


def test_crashing_together_does_not_restart_in_lockstep(platform: Platform) -> None:
    """Two services that crash alike get backoff delays of their own: after the first
    restarts (at once after a ready run, then ``first``) each delay is drawn between half
    the step and the step. The delays are read from the daemon's log, as it chose them: spawn
    times also carry each process's own start-up time, which can hide or fake a gap."""
    for name in ("a", "b"):
        platform.add(name, args="--crash-after 0.1", backoff={"first": "200ms", "max": "2s"}, start_limit=20)
    platform.write()
    platform.svc("up")

    def delays() -> dict[str, list[float]]:
        chosen: dict[str, list[float]] = {"a": [], "b": []}
        for line in (platform.state_dir / "daemon.log").read_text().splitlines():
            if line.startswith("{") and '"service crashed"' in line:
                record = json.loads(line)
                chosen[record["service"]].append(record["delay"])
        return chosen

    wait_until(lambda: min(map(len, delays().values())) >= 4, timeout=30, what="four crashes each")
    a, b = (delays()[name][:4] for name in "ab")
    for steps in (a, b):  # never more than the step: 200, 400, 800, 1600 ms (less after a ready run)
        assert all(0.0 <= delay <= limit for delay, limit in zip(steps, (0.2, 0.4, 0.8, 1.6), strict=True)), steps
    assert a != b, (a, b)  # the jittered ones equal to the millisecond only in lockstep


def test_a_crash_reads_in_order_in_the_service_log_the_exit_then_what_it_leads_to(platform: Platform) -> None:
    """A person reading a crash-looping service's log sees each exit, then the backoff it
    caused, then the next start; and the last exit before `failed`, not after it."""
    platform.add("api", args="--crash-after 0.05 --exit-code 3", backoff={"first": "50ms", "max": "50ms"}, start_limit=2)
    platform.write()
    platform.svc("up")
    platform.wait_state("api", "failed", timeout=30)
    log = platform.state_dir / "logs" / "api.log"
    marks = [line.split(" --- svc: ", 1)[1].removesuffix(" ---") for line in log.read_text().splitlines() if " --- svc: " in line]
    events = ["start" if m.startswith("started pid") else "exit" if m.startswith("pid ") else m.split(":", 1)[0] for m in marks]
    events = [e for e in events if e != "ready"]  # whether each run was seen ready first depends on the machine's load
    assert events == ["start", "exit", "backoff"] * 2 + ["start", "exit", "failed"], marks
    assert all(m.endswith("exited with code 3") for m in marks if m.startswith("pid ")), marks


def test_failed_service_comes_back_by_itself_once_its_cause_is_fixed(platform: Platform) -> None:
    flag = platform.root / "license.key"
    port = platform.free_port()
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


def test_a_watch_restart_says_which_file_in_status_the_watch_stream_and_the_logs(platform: Platform) -> None:
    """The reason of a file-watch restart is where people look, not only in daemon.log: the
    JSON and table of `svc status`, `svc status --watch`, and `svc logs`; until the next change."""
    import json
    import subprocess

    from tests.integration.harness import SVC
    from tests.integration.test_watch import Lines

    src = platform.root / "src"
    src.mkdir()
    watched = src / "app.py"
    watched.write_text("x = 1\n")
    platform.add("api", watch=["src/*.py"], backoff={"first": "100ms", "max": "100ms"})
    platform.write()
    platform.svc("up", check=True)
    assert platform.status()["api"]["reason"] == ""
    proc = subprocess.Popen([*SVC, "status", "--watch", "-f", str(platform.manifest)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=platform.root, start_new_session=True)
    try:
        out = Lines(proc)
        seen = out.wait_for(r" api: ready in ")
        first_pid = platform.status()["api"]["pid"]
        watched.write_text("x = 2\n")
        restarting = out.wait_for(r" api: \w+: restarting: src/app\.py changed$", after=seen)
        out.wait_for(r" api: ready \(restarted: src/app\.py changed\) in [\d.]+s \(port \d+, pid \d+, 1 restart\)$",
                     after=restarting)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    status = platform.wait_state("api", "ready")
    assert status["pid"] != first_pid and status["reason"] == "restarted: src/app.py changed", status
    table = platform.svc("status", check=True).stdout
    assert "ready (restarted: src/app.py changed)" in table, table
    logs = platform.svc("logs", "api", check=True).stdout
    lines = logs.splitlines()
    assert "api | stopping: restarting: src/app.py changed" in lines, logs
    assert lines.index("api | stopping: restarting: src/app.py changed") < lines.index("api | ready: restarted: src/app.py changed")

    # the next state change ends it: a crash says its own reason, and once ready again, none
    os.kill(status["pid"], signal.SIGKILL)
    again = wait_until(lambda: (s := platform.status()["api"])["state"] == "ready" and s["pid"] != status["pid"] and s,
                       timeout=15, what="api back after the crash")
    assert again["reason"] == "" and again["restarts"] == 2
    assert "restarted" not in json.dumps(platform.status()["api"])


def test_a_crash_restarts_at_once_and_still_kills_what_escaped_the_group(platform: Platform) -> None:
    """SIGKILL of a service whose daemonized grandchild left its process group and session:
    the service starts again at once (the sweep for escaped processes waits for the
    successor's spawn), and that sweep then finds and kills the escaped one."""
    platform.add("api", args="--daemonize-grandchild", restart="always")
    platform.write()
    platform.svc("up", check=True)
    first = platform.wait_state("api", "ready")
    escaped = int(str(platform.events("daemonized_grandchild", "api")[0]["child_pid"]))
    assert os.getsid(escaped) != os.getsid(first["pid"]) and not gone(escaped)

    os.kill(first["pid"], signal.SIGKILL)
    wait_gone([escaped], timeout=10)  # killed by the crash's sweep
    again = wait_until(lambda: (s := platform.status()["api"])["state"] == "ready" and s["pid"] != first["pid"] and s,
                       timeout=15, what="api back after the crash")
    assert again["restarts"] == 1
    assert len(platform.events("spawned", "api")) == 2
