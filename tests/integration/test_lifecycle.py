"""The lifecycle's promises with real processes: `svc up` always ends (a bound from the
manifest, or --timeout) and says what is not ready; an explicit up starts a crash loop
from a clean history; a restart with dependents starts its one-shots only once the
restarted service is ready again; a program that daemonizes itself is named, and with
``pid_file`` it is supervised through the pid it writes (real redis-server)."""

from __future__ import annotations

import shutil
import time

import psutil
import pytest

from tests.conftest import wait_until
from tests.integration.harness import DEMO, Platform, port_accepts, wait_gone


def test_up_timeout_ends_the_wait_and_names_what_is_not_ready(platform: Platform) -> None:
    platform.add("db", tier="infra")
    platform.add("slow", tier="infra", args="--delay 60", ready_timeout="30s", failed_retry=0)
    platform.write()
    began = time.monotonic()
    result = platform.svc("up", "--timeout", "1500ms")
    took = time.monotonic() - began
    assert result.returncode == 1, result.stderr
    assert "gave up waiting after 1.5s; not settled yet: slow" in result.stderr
    assert "✗ slow: starting" in result.stderr and "db" not in result.stderr.split("not settled yet:")[1].splitlines()[0]
    assert took < 20  # a bound that only catches a hang (the figure is about 2 s with the daemon's start)
    assert platform.status()["db"]["state"] == "ready"


def test_up_timeout_must_be_a_duration(platform: Platform) -> None:
    platform.add("db")
    platform.write()
    result = platform.svc("up", "--timeout", "soon")
    assert result.returncode == 2 and "--timeout" in result.stderr and "duration" in result.stderr


def test_down_then_up_of_a_crash_loop_fails_again_with_a_clean_start_limit(platform: Platform) -> None:
    platform.add(
        "flaky", args="--oneshot 0.05 --exit-code 3", start_limit=3, start_limit_window="60s",
        backoff={"first": "100ms", "max": "10s"}, failed_retry=0,
    )
    platform.write()
    assert platform.svc("up").returncode == 1
    assert len(platform.events("spawned", "flaky")) == 4  # the first start and three restarts
    assert platform.svc("down", "flaky").returncode == 0
    result = platform.svc("up")  # the history starts afresh: 100 ms, 200 ms, 400 ms again, not 10 s
    assert result.returncode == 1 and "start_limit" in result.stderr, result.stderr
    spawns = [r["time"] for r in platform.events("spawned", "flaky")]
    assert len(spawns) == 8
    assert spawns[-1] - spawns[4] < 7.0  # 0.7 s of backoff; a history carried over would wait 10 s or more


def test_restart_with_dependents_starts_the_one_shots_once_the_service_is_ready_again(platform: Platform) -> None:
    platform.add("db", tier="infra", args="--ignore-sigterm --delay 0.5", stop_timeout="1s")
    for task, needs in (("check", "db"), ("migrate", "check")):
        platform.services[task] = {
            "tier": "app", "kind": "oneshot", "depends_on": [needs],
            "command": f"{DEMO} --record {platform.records} --name {task} --oneshot 0.1 --no-port",
        }
    platform.add("web", depends_on=["migrate"])
    platform.write()
    assert platform.svc("up").returncode == 0
    before = {n: len(platform.events("spawned", n)) for n in ("db", "check", "migrate", "web")}
    result = platform.svc("restart", "db", "--with-dependents")
    assert result.returncode == 0, result.stderr
    db_ready = [r["time"] for r in platform.events("listening", "db")][-1]
    for name in ("check", "migrate", "web"):
        spawns = [r["time"] for r in platform.events("spawned", name)]
        assert len(spawns) == before[name] + 1, name
        assert spawns[-1] > db_ready, f"{name} started before db was ready again"
    web_stopped = [r["time"] for r in platform.events("stopping", "web")][-1]
    db_signalled = [r["time"] for r in platform.events("sigterm_ignored", "db")][-1]
    assert web_stopped < db_signalled  # dependents stop first


needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (installed by .ci/run)")


def _redis(platform: Platform, name: str, port: int, pid_file: bool) -> None:
    command = f"redis-server --port {port} --daemonize yes --save '' --appendonly no --dir {platform.root}"
    table = {"tier": "app", "command": command, "port": port, "failed_retry": 0, "stop_timeout": "5s"}
    if pid_file:
        table["command"] += " --pidfile {state_dir}/" + name + ".pid"
        table["pid_file"] = "{state_dir}/" + name + ".pid"
    platform.services[name] = table


@needs_redis
def test_a_program_that_daemonizes_itself_is_failed_with_a_reason_naming_it(platform: Platform) -> None:
    port = platform.free_port()
    _redis(platform, "cache", port, pid_file=False)
    platform.write()
    try:
        result = platform.svc("up")
        assert result.returncode == 1
        status = platform.status()["cache"]
        assert status["state"] == "failed"
        reason = status["reason"]
        assert "exited with code 0 but left pid" in reason and f"listening on port {port}" in reason
        assert "redis-server" in reason and "--daemonize no" in reason and "pid_file" in reason
    finally:
        for proc in psutil.process_iter(["name", "cmdline"]):  # it is not ours to stop: the test cleans up
            if proc.info["name"] == "redis-server" and f":{port}" in " ".join(proc.info["cmdline"] or []):
                proc.kill()


@needs_redis
def test_with_pid_file_the_daemonized_process_is_supervised_and_stopped(platform: Platform) -> None:
    port = platform.free_port()
    _redis(platform, "cache", port, pid_file=True)
    platform.write()
    assert platform.svc("up").returncode == 0
    status = wait_until(lambda: (s := platform.status()["cache"]) and s["pid"] and s, what="the daemon's pid")
    pid = status["pid"]  # type: ignore[index]
    assert psutil.Process(pid).name() == "redis-server"
    assert int((platform.state_dir / "cache.pid").read_text()) == pid
    psutil.Process(pid).kill()  # the daemon dies: noticed through its pid, and restarted
    wait_until(lambda: (s := platform.status()["cache"])["state"] == "ready" and s["pid"] not in (None, pid), what="a new daemon")
    assert platform.status()["cache"]["restarts"] == 1
    new_pid = platform.status()["cache"]["pid"]
    assert platform.svc("down").returncode == 0
    wait_gone([new_pid], timeout=10)
    assert not port_accepts(port)
