"""A paused (SIGSTOPped) service, and a log-readiness pattern that makes a backtracking engine hang.

- A process stopped by SIGSTOP runs no code, so it cannot act on SIGTERM: the stop
  signal is followed by SIGCONT, and `svc down` of a paused service (main process, a
  child in its group, a daemonized grandchild that left it) returns in well under its
  `stop_timeout` of 30 s, every process gone through its SIGTERM handling, not SIGKILL.
  `svc status` shows the service as paused while it is.
- `ready.log = "(a+)+$"` against lines of 28-30 'a' and a '!' takes Python's `re` from
  seconds to minutes per line, on the event loop. Matched with RE2, the daemon
  keeps answering `svc status` throughout and the service is ready as soon as its
  real ready line is printed. `svc check` refuses what RE2 cannot run, naming the
  file, service and key.

The time bounds only catch a hang: they are ten times and more the figures measured
on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from supervisord_lite.cli import transport
from supervisord_lite.core import paths
from supervisord_lite.host.proctable import is_paused
from tests.conftest import FAKES, wait_until
from tests.integration.harness import SVC, Platform, wait_gone
from tests.reliability.test_flood import Poller

STOP_TIMEOUT = "30s"
DOWN_BOUND = 10.0  # seconds; measured about 0.5 s for `svc down` of a paused service
STALLED_CLI = 10.0  # seconds, a hang bound; `svc status` (its start-up included) measured 0.3-0.5 s, 2 s loaded
STALLED_RAW = 2.0  # seconds; a raw status request measured a few milliseconds
READY_BOUND = 5.0  # seconds from the ready line to `ready`; measured 0.05 s (Python's re: 30 s and more)


def _pause(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, timeout=5, what=f"pid {pid} to stop")


def test_is_paused_follows_sigstop_and_sigcont_and_is_false_once_gone() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not is_paused(sleeper.pid)
        _pause(sleeper.pid)
        assert is_paused(sleeper.pid)
        os.kill(sleeper.pid, signal.SIGCONT)
        wait_until(lambda: not is_paused(sleeper.pid), timeout=5, what="the sleeper to run again")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not is_paused(sleeper.pid)


def test_a_paused_service_shows_as_paused_and_stops_well_before_stop_timeout(platform: Platform) -> None:
    platform.add("api", args="--grandchild --daemonize-grandchild", stop_timeout=STOP_TIMEOUT)
    platform.add("worker", port=None, stop_timeout=STOP_TIMEOUT)
    platform.write()
    platform.svc("up", check=True)
    status = platform.status()
    assert status["api"]["paused"] is False and status["worker"]["paused"] is False
    api, worker = status["api"]["pid"], status["worker"]["pid"]
    children = [e["child_pid"] for e in platform.events() if e.get("event") in ("grandchild", "daemonized_grandchild")]
    assert len(children) == 2, platform.events()
    tree = [api, *children]
    for pid in [*tree, worker]:
        _pause(pid)

    paused = wait_until(lambda: all(s["paused"] for s in platform.status().values()), timeout=10, what="both to show as paused")
    assert paused
    table = platform.svc("status", check=True).stdout
    api_line = next(line for line in table.splitlines() if line.startswith("api "))
    assert "ready (paused: stopped by a signal)" in api_line, table

    # resumed by hand: no longer paused
    os.kill(worker, signal.SIGCONT)
    wait_until(lambda: platform.status()["worker"]["paused"] is False, timeout=10, what="worker to show as running again")
    _pause(worker)

    started = time.monotonic()
    down = platform.svc("down", timeout=60)
    took = time.monotonic() - started
    assert down.returncode == 0, down.stderr
    assert took < DOWN_BOUND, f"svc down of a paused service took {took:.1f}s (stop_timeout {STOP_TIMEOUT})"
    wait_gone([*tree, worker], timeout=5)
    stopping = {e["name"]: e.get("signal") for e in platform.events("stopping")}
    assert stopping == {"api": "SIGTERM", "worker": "SIGTERM"}, "each main process handled its SIGTERM"
    assert [p.pid for p in platform.our_processes()] == [platform.daemon_pid()], "only the daemon is left"
    print(f"\nsvc down of two paused services (one a tree of 3) took {took:.2f}s; stop_timeout {STOP_TIMEOUT}")


def test_a_backtracking_pattern_neither_stalls_the_daemon_nor_delays_readiness(platform: Platform) -> None:
    trigger, record = platform.root / "go", platform.root / "printed.jsonl"
    platform.services["bait"] = {
        "tier": "app",
        "command": [sys.executable, str(FAKES / "backtracking_bait.py"), str(trigger), str(record)],
        "ready": {"log": "(a+)+$"},
        "ready_timeout": "60s",
    }
    platform.add("api")
    platform.write()
    platform.svc("up", "api", check=True)  # the daemon runs; bait is not started yet
    sock = paths.socket_path_for(platform.state_dir)
    up = subprocess.Popen(
        [*SVC, "up", "--manifest", str(platform.manifest), "bait"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=platform.root, stdin=subprocess.DEVNULL,
    )
    pollers: list[Poller] = []
    try:
        wait_until(lambda: record.exists() and "waiting for the trigger" in record.read_text(), timeout=20,
                   what="bait to wait for its trigger")
        assert platform.status()["bait"]["state"] == "starting"

        def cli_status() -> None:
            result = platform.svc("status", "--json", timeout=30)
            assert result.returncode == 0, result.stderr

        pollers = [Poller(cli_status), Poller(lambda: transport.call(sock, "status", {}, timeout=30))]
        for p in pollers:
            p.start()
        wait_until(lambda: all(p.calls for p in pollers), timeout=20, what="the first status answers")
        started = time.monotonic()
        trigger.touch()
        out, err = up.communicate(timeout=30)
        ended = time.monotonic()
    finally:
        for p in pollers:
            p.stop.set()
        for p in pollers:
            p.join(60)
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, out + err
    assert not [e for p in pollers for e in p.errors], [p.errors[:3] for p in pollers]
    cli, raw = pollers[0].during(started, ended), pollers[1].during(started, ended)
    assert cli and raw, "status was not measured while the lines were matched"
    assert max(cli) < STALLED_CLI, f"svc status took up to {max(cli):.2f}s while the bait lines were matched"
    assert max(raw) < STALLED_RAW, f"a raw status request took up to {max(raw):.2f}s while the bait lines were matched"

    printed = {json.loads(x)["line"]: json.loads(x)["time"] for x in record.read_text().splitlines()}
    assert {"a" * 28 + "!", "a" * 29 + "!", "a" * 30 + "!"} <= set(printed)
    status = platform.status()["bait"]
    assert status["state"] == "ready" and status["restarts"] == 0
    ready_line = printed["ready to serve data"]
    assert ready_line <= status["ready_at"] < ready_line + READY_BOUND, "ready on its ready line, and promptly"
    log = (platform.state_dir / "logs" / "bait.log").read_text()
    assert "a" * 30 + "!" in log  # the bait went through the matcher and the log
    print(f"\nbacktracking bait: ready {(status['ready_at'] - ready_line) * 1000:.0f} ms after its line; "
          f"svc status max {max(cli):.2f}s over {len(cli)} calls, raw max {max(raw) * 1000:.0f} ms over {len(raw)}")


def test_check_refuses_a_pattern_re2_cannot_run_naming_file_service_and_key(platform: Platform) -> None:
    platform.add("api", ready={"log": "(?=listening)listening"})
    platform.add("worker", port=None, ready={"log": r"(\d+) items, \1 done"})
    platform.add("fine", port=None, ready={"log": r"^worker: (?P<n>\d+) items$"})
    platform.write()
    check = platform.svc("check")
    assert check.returncode == 2, check.stdout + check.stderr
    report = check.stdout + check.stderr
    lookahead = next(line for line in report.splitlines() if "services.api.ready.log" in line)
    assert lookahead.startswith(f"{platform.manifest}:") and "lookahead" in lookahead and "RE2" in lookahead, report
    backreference = next(line for line in report.splitlines() if "services.worker.ready.log" in line)
    assert "backreferences (\\1)" in backreference, report
    assert "services.fine" not in report
    up = platform.svc("up")  # the daemon refuses it too: nothing starts
    assert up.returncode == 2 and "services.api.ready.log" in up.stdout + up.stderr
    assert not platform.our_processes()
