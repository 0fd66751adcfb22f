"""Faults around stopping and crashing: process trees that resist SIGTERM or escape their
group, and a daemon SIGKILLed in the middle of `svc up`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest

from tests.conftest import FAKES, free_ports, wait_until
from tests.integration.harness import SVC, Platform, port_accepts, wait_gone

STOP_TIMEOUT = 1.5
MARGIN = 5.0  # hang bound over the stop timeout: SIGKILL rounds, the port check and the CLI's start-up measured about 0.3-0.5 s


def service_of(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get("SVC_SERVICE")
    except psutil.Error:
        return None


def test_sigterm_ignoring_tree_and_daemonized_grandchild_are_gone_within_stop_timeout(platform: Platform) -> None:
    pid_file = platform.root / "daemonized.pid"
    platform.services["stubborn"] = {
        "tier": "app", "command": [sys.executable, str(FAKES / "ignore_term_tree.py")],
        "ready": {"log": "^pids "}, "stop_timeout": f"{STOP_TIMEOUT}s",
    }
    platform.services["escaper"] = {
        "tier": "app", "command": [sys.executable, str(FAKES / "double_fork.py"), str(pid_file)],
        "ready": {"log": "^daemonized "}, "stop_timeout": f"{STOP_TIMEOUT}s",
    }
    platform.write()
    platform.svc("up", check=True)
    status = platform.status()
    daemonized = int(pid_file.read_text())
    escaped = psutil.Process(daemonized)
    assert os.getsid(daemonized) != status["escaper"]["pid"], "the grandchild left the service's session"
    assert escaped.ppid() != status["escaper"]["pid"]
    tree = {p.pid for p in platform.our_processes()} - {platform.daemon_pid()}
    assert daemonized in tree and len(tree) >= 4  # stubborn + its grandchild, escaper + its daemon

    started = time.monotonic()
    result = platform.svc("down", timeout=30)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    wait_gone(sorted(tree), timeout=0.5)  # already gone when `svc down` returns
    assert STOP_TIMEOUT <= took < STOP_TIMEOUT + MARGIN, f"svc down took {took:.2f}s (stop_timeout {STOP_TIMEOUT}s)"
    logged = (platform.state_dir / "logs" / "stubborn.log").read_text()
    assert "killed by SIGKILL" in logged or "SIGKILL" in logged


def _kill_daemon_when(platform: Platform, moment: str) -> dict[str, Any]:
    """Run `svc up` in the background and SIGKILL its daemon at ``moment``."""
    up = subprocess.Popen([*SVC, "up", "--manifest", str(platform.manifest)], cwd=platform.root,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        def reached() -> bool:
            events = platform.events()
            names = {(e["event"], e["name"]) for e in events}
            if moment == "first ready":
                return any(e == "listening" for e, _ in names)
            if moment == "middle tier starting":
                return ("spawned", "api") in names and ("listening", "api") not in names
            if moment == "last tier spawned":
                return ("spawned", "web") in names
            raise AssertionError(moment)

        wait_until(reached, timeout=20, interval=0.005, what=moment)
        daemon = platform.daemon_pid()
        assert daemon
        os.kill(daemon, signal.SIGKILL)
        _out, err = up.communicate(timeout=20)
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate()
    wait_gone([daemon])
    assert up.returncode != 0 and "Traceback" not in err, err
    return {"daemon": daemon}


@pytest.mark.parametrize("moment", ["first ready", "middle tier starting", "last tier spawned"])
def test_daemon_sigkilled_in_the_middle_of_up_then_a_new_daemon_converges(platform: Platform, moment: str) -> None:
    ports = dict(zip(["db", "cache", "api", "web"], free_ports(4)))
    platform.add("db", tier="infra", port=ports["db"], args="--delay 0.3")
    platform.add("cache", tier="infra", port=ports["cache"])
    platform.add("api", port=ports["api"], depends_on=["db", "cache"], args="--delay 0.6 --grandchild")
    platform.add("worker", port=None, depends_on=["db"])
    platform.add("web", tier="web", port=ports["web"], depends_on=["api"], args="--delay 0.3")
    platform.write()

    killed = _kill_daemon_when(platform, moment)
    first_generation = {p.pid for p in platform.our_processes()} - {killed["daemon"]}

    result = platform.svc("up")
    assert result.returncode == 0, result.stderr
    wait_gone(sorted(first_generation), timeout=5)  # no orphan of the killed daemon survives
    status = platform.status()
    assert {s["state"] for s in status.values()} == {"ready"}, status
    assert all(port_accepts(p) for p in ports.values())

    # exactly one instance of each service: one process each, two for api (it has a grandchild)
    daemon = platform.daemon_pid()
    running: dict[str, list[int]] = {}
    for proc in platform.our_processes():
        if proc.pid != daemon and (name := service_of(proc)):
            running.setdefault(name, []).append(proc.pid)
    assert {n: len(p) for n, p in running.items()} == {"db": 1, "cache": 1, "api": 2, "worker": 1, "web": 1}, running
    assert all(status[n]["pid"] in pids for n, pids in running.items())
    assert platform.events("bind_failed") == []  # never two instances on one port at once
    # the old daemon's pid file and socket were taken over, not duplicated
    daemons = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and "supervisord_lite.daemon" in p.info["cmdline"]
               and str(platform.manifest) in " ".join(p.info["cmdline"])]
    assert [p.pid for p in daemons] == [daemon]
