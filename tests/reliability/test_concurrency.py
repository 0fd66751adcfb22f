"""Concurrent clients: `svc up`, `svc down` and `svc restart` at once on overlapping
services. Every command finishes (none hangs), nothing is ever spawned twice (two
instances of one service would collide on its port: the demo records `bind_failed`),
and the final state is what the last command asked.

The ordered tests make "last" exact without sleeping: each request is sent only once
the daemon has visibly acted on the one before (its first progress message, or the
state change a `down` causes).
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from supervisord_lite.core import paths
from supervisord_lite.cli import transport
from tests.conftest import wait_until
from tests.integration.harness import SVC, Platform, wait_gone

TRANSIENT = {"waiting", "starting", "stopping", "backoff"}


def build(platform: Platform, *, slow_stop: bool = False, stop_timeout: str = "1s") -> None:
    platform.add("db", tier="infra", args="--delay 0.4")
    platform.add("cache", tier="infra")
    platform.add("api", depends_on=["db", "cache"], args="--delay 0.2")
    platform.add("worker", port=None, depends_on=["db"])
    web_args = "--ignore-sigterm" if slow_stop else ""
    platform.add("web", tier="web", depends_on=["api"], args=web_args, stop_timeout=stop_timeout)
    platform.write()


def processes_by_service(platform: Platform) -> dict[str, list[int]]:
    daemon = platform.daemon_pid()
    out: dict[str, list[int]] = {}
    for proc in platform.our_processes():
        if proc.pid == daemon:
            continue
        try:
            name = proc.environ().get("SVC_SERVICE")
        except psutil.Error:
            continue
        if name:
            out.setdefault(name, []).append(proc.pid)
    return out


def assert_consistent(platform: Platform) -> dict[str, dict[str, Any]]:
    """Every service settled; a ready one has exactly its one process, a stopped one none."""
    status = platform.status()
    running = processes_by_service(platform)
    for name, s in status.items():
        assert s["state"] not in TRANSIENT, (name, s["state"], s["reason"])
        if s["state"] == "ready":
            assert running.get(name) == [s["pid"]], (name, running.get(name), s["pid"])
        else:
            assert name not in running, (name, s["state"], running[name])
    assert platform.events("bind_failed") == [], "two instances of one service ran at once"
    return status


class Client(threading.Thread):
    """One control request in a thread; ``first`` is set once the daemon answered anything."""

    def __init__(self, platform: Platform, op: str, args: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.sock = paths.socket_path_for(platform.state_dir)
        self.op, self.args = op, args
        self.first = threading.Event()
        self.messages: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for message in transport.request(self.sock, self.op, self.args, timeout=60):
                self.messages.append(message)
                self.first.set()
        except BaseException as exc:  # reported by finish()
            self.error = exc
        finally:
            self.first.set()

    def finish(self, timeout: float = 30) -> dict[str, Any]:
        self.join(timeout)
        assert not self.is_alive(), f"`{self.op} {self.args}` never finished"
        assert self.error is None, f"`{self.op} {self.args}` failed: {self.error!r}"
        last = self.messages[-1]
        assert last.get("done"), last
        return last


def start(platform: Platform, op: str, **args: Any) -> Client:
    client = Client(platform, op, args)
    client.start()
    return client


def until(predicate: Callable[[], bool], what: str) -> None:
    wait_until(predicate, timeout=15, interval=0.01, what=what)


def test_down_while_up_is_still_starting_wins(platform: Platform) -> None:
    build(platform)
    platform.svc("up", "cache", check=True)  # the daemon runs; db is slow to start
    up = start(platform, "up")
    up.first.wait(10)
    down = start(platform, "down", names=["db"])
    assert down.finish()["ok"]
    up_result = up.finish()
    assert up_result["ok"] and up_result["result"]["all_ready"] is False  # it reports what it could not finish
    # and why: the down took back db and what depends on it; no failure of theirs, nothing removed
    assert sorted(up_result["result"]["taken_back"]) == ["api", "db", "web", "worker"], up_result
    assert up_result["result"]["removed"] == [] and up_result["result"]["tails"] == {}, up_result
    status = assert_consistent(platform)
    assert {n: s["state"] for n, s in status.items()} == {
        "db": "stopped", "api": "stopped", "worker": "stopped", "web": "stopped", "cache": "ready",
    }


def _svc_in_background(platform: Platform, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SVC, args[0], "--manifest", str(platform.manifest), *args[1:]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=platform.root, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _outcome(command: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    return command.returncode, out, err


@pytest.mark.parametrize("by", ["down", "reload"])
def test_svc_up_overtaken_says_what_was_taken_back_or_removed_not_a_stale_state(platform: Platform, by: str) -> None:
    build(platform)
    platform.services["db"]["command"] = platform.services["db"]["command"].replace("--delay 0.4", "--delay 5")
    platform.services["db"]["ready_timeout"] = "30s"  # db is starting for 5 s: the window for the later command
    platform.write()
    platform.svc("up", "cache", check=True)  # the daemon runs
    up = _svc_in_background(platform, "up")
    try:
        until(lambda: platform.status()["db"]["state"] == "starting", "db to be starting")
        if by == "down":
            platform.svc("down", "db", check=True)
        else:  # db and everything that needs it leave the manifest
            for name in ("db", "api", "worker", "web"):
                del platform.services[name]
            platform.write()
            platform.svc("reload", check=True)
    finally:
        code, out, err = _outcome(up)
    assert code == 1, (out, err)
    assert "✗" not in err and "starting" not in err, err  # no failure, and no state from before the later command
    if by == "down":
        assert err.splitlines()[-2:] == [
            "1/5 services ready",
            "taken back by a later stop (`svc down`, or the daemon stopping) before this up was done with them: "
            "db, api, worker, web",
        ], err
    else:
        assert err.splitlines()[-1] == (
            "removed from the manifest by `svc reload` before this up was done with them: db, api, worker, web"
        ), err
    assert_consistent(platform)


def test_up_while_down_is_still_stopping_wins_and_down_returns(platform: Platform) -> None:
    # web ignores SIGTERM: it is stopping for the whole stop_timeout, the window for the later up
    build(platform, slow_stop=True, stop_timeout="5s")
    platform.svc("up", check=True)
    before = platform.status()
    down = start(platform, "down")
    until(lambda: platform.status()["web"]["state"] == "stopping", "web to be stopping")
    up = start(platform, "up")
    up_result = up.finish()
    down_result = down.finish()
    assert down_result["done"], down_result
    assert up_result["ok"] and up_result["result"]["all_ready"], up_result
    # the down got no further than web's step: it stopped nothing, and says who took the rest
    assert down_result["result"]["stopped"] == [], down_result
    assert sorted(down_result["result"]["taken_over"]) == sorted(before), down_result
    status = assert_consistent(platform)
    assert {s["state"] for s in status.values()} == {"ready"}
    assert status["web"]["pid"] != before["web"]["pid"]


@pytest.mark.parametrize("named", [False, True], ids=["all", "named"])  # the console script's quick path, and click's
def test_svc_down_overtaken_by_an_up_says_what_it_stopped_and_what_was_taken_over(platform: Platform, named: bool) -> None:
    build(platform, slow_stop=True, stop_timeout="5s")  # the window for the later up, as above
    platform.svc("up", check=True)
    names = ["api"] if named else []  # api takes web (its dependent) with it
    down = _svc_in_background(platform, "down", *names)
    try:
        until(lambda: platform.status()["web"]["state"] == "stopping", "web to be stopping")
        platform.svc("up", check=True)
    finally:
        _code, out, err = _outcome(down)
    assert _code == 1, (out, err)  # not everything it was to stop is stopped: a script must not go on as if it were
    taken = "web, api" if named else "web, api, worker, db, cache"  # in stop order
    assert out.splitlines() == ["stopped nothing"], out
    assert err.splitlines()[-1] == f"taken over by a later command before this down was done with them: {taken}", err
    assert_consistent(platform)


def test_restart_while_down_of_its_dependency_wins(platform: Platform) -> None:
    build(platform)
    platform.svc("up", check=True)
    down = start(platform, "down", names=["db"])
    until(lambda: platform.status()["db"]["state"] in ("stopping", "stopped"), "db to be stopping")
    restart = start(platform, "restart", names=["api"])  # needs db again: the last word
    restart_result = restart.finish()
    down.finish()
    assert restart_result["ok"] and restart_result["result"]["all_ready"], restart_result
    status = assert_consistent(platform)
    assert status["api"]["state"] == "ready" and status["db"]["state"] == "ready" and status["cache"]["state"] == "ready"


@pytest.mark.parametrize("seed", [7, 11])  # 7 once left an `up` waiting forever on a start taken back
def test_many_clients_at_once_finish_and_never_duplicate_a_service(platform: Platform, seed: int) -> None:
    build(platform, slow_stop=True)
    platform.svc("up", "cache", check=True)
    rng = random.Random(seed)
    names = ["db", "cache", "api", "worker", "web"]
    commands: list[tuple[str, dict[str, Any]]] = []
    for _ in range(24):
        op = rng.choice(["up", "up", "down", "restart"])
        picked = rng.sample(names, rng.randint(1, 2))
        commands.append((op, {"names": picked} if op == "restart" or rng.random() < 0.7 else {}))
    # all at once, from several real CLI processes as well as raw clients
    clients = [start(platform, op, **args) for op, args in commands]
    cli_results: list[Any] = []

    def cli(*args: str) -> None:
        cli_results.append(platform.svc(*args, timeout=60))

    cli_threads = [threading.Thread(target=cli, args=a) for a in (("up",), ("restart", "api"), ("down", "db"), ("up", "web"))]
    for t in cli_threads:
        t.start()
    for c in clients:
        c.finish(timeout=60)
    for t in cli_threads:
        t.join(60)
        assert not t.is_alive()
    assert all(r.returncode in (0, 1) for r in cli_results), [(r.returncode, r.stderr) for r in cli_results]
    assert all("Traceback" not in r.stderr for r in cli_results)
    until(lambda: not any(s["state"] in TRANSIENT for s in platform.status().values()), "everything to settle")
    assert_consistent(platform)

    # and a last command, after the storm, is obeyed exactly
    assert platform.svc("up").returncode == 0
    status = assert_consistent(platform)
    assert {s["state"] for s in status.values()} == {"ready"}
    pids = [s["pid"] for s in status.values()]
    assert platform.svc("down").returncode == 0
    wait_gone(pids, timeout=5)
    status = assert_consistent(platform)
    assert {s["state"] for s in status.values()} == {"stopped"}
    assert json.dumps(status)  # and the daemon still answers
