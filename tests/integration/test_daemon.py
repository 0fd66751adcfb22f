"""The daemon and `svc up/down/restart/status/reload/shutdown`, with real processes.

Each test writes a manifest of demo services (the shipped stand-in) on free ports,
drives the real CLI, and asserts on what the services themselves recorded (their
own timestamps), on the daemon's JSON status, and on the process table.
"""

from __future__ import annotations

import json
import os
import re
import signal

import subprocess
import sys
import threading

import psutil

from tests.conftest import free_ports, wait_until
from tests.integration.harness import DEMO, Platform, port_accepts, wait_gone


def test_up_starts_in_dependency_and_tier_order_and_down_leaves_nothing(platform: Platform) -> None:
    db = platform.add("db", tier="infra", args="--delay 0.4")
    cache = platform.add("cache", tier="infra")
    api = platform.add("api", depends_on=["db", "cache"], ready={"http": "/health"}, url="http://127.0.0.1:{port}/")
    worker = platform.add("worker", port=None, depends_on=["db"])
    web = platform.add("web", tier="web", args="--delay 0.2", depends_on=["api"])
    platform.write()

    result = platform.svc("up")
    assert result.returncode == 0, result.stderr
    assert "5/5 services ready" in result.stdout
    status = platform.status()
    assert {s["state"] for s in status.values()} == {"ready"}
    assert status["api"]["url"] == f"http://127.0.0.1:{api}/"

    listening = {r["name"]: r["time"] for r in platform.events("listening")}
    spawned = {r["name"]: r["time"] for r in platform.events("spawned")}
    # a service spawns only after everything it depends on listens, and after the earlier tier
    assert spawned["api"] > listening["db"] and spawned["api"] > listening["cache"]
    assert spawned["worker"] > listening["db"]
    assert spawned["web"] > listening["api"]
    # independent services of one step start together: db's slow start does not delay cache
    assert listening["cache"] < listening["db"]

    pids = [s["pid"] for s in status.values()]
    result = platform.svc("down")
    assert result.returncode == 0, result.stderr
    wait_gone(pids, timeout=5)
    assert not any(port_accepts(p) for p in (db, cache, api, web))
    assert platform.our_processes() == [p for p in platform.our_processes() if p.pid == platform.daemon_pid()]
    stopping = {r["name"]: r["time"] for r in platform.events("stopping")}
    assert stopping["web"] < stopping["api"] < stopping["db"]  # reverse order
    assert worker is None


def test_down_one_service_stops_its_dependents_first_and_leaves_the_rest(platform: Platform) -> None:
    platform.add("db", tier="infra")
    platform.add("other", tier="infra")
    platform.add("api", depends_on=["db"])
    platform.add("web", tier="web", depends_on=["api"])
    platform.write()
    platform.svc("up", check=True)

    result = platform.svc("down", "db")
    assert result.returncode == 0, result.stderr
    status = platform.status()
    assert [status[n]["state"] for n in ("db", "api", "web", "other")] == ["stopped", "stopped", "stopped", "ready"]
    stopping = {r["name"]: r["time"] for r in platform.events("stopping")}
    assert stopping["web"] < stopping["api"] < stopping["db"]


def test_missing_command_fails_with_the_os_error_and_dependents_wait(platform: Platform) -> None:
    platform.services["db"] = {"tier": "infra", "command": "no-such-binary-xyz --flag", "port": platform.free_port(), "failed_retry": 0}
    platform.add("api", depends_on=["db"])
    platform.write()

    result = platform.svc("up")
    assert result.returncode == 1
    assert "db: failed" in result.stderr
    assert "no-such-binary-xyz" in result.stderr and "No such file or directory" in result.stderr
    status = platform.status()
    assert status["api"]["state"] == "waiting" and status["api"]["blocked_by"] == ["db"]
    assert "db (failed" in status["api"]["reason"]


def test_service_that_never_opens_its_port_fails_after_ready_timeout_with_its_log_tail(platform: Platform) -> None:
    platform.add("db", tier="infra", args="--delay 60", ready_timeout="1s", failed_retry=0)
    platform.add("api", depends_on=["db"])
    platform.write()

    result = platform.svc("up")
    assert result.returncode == 1
    assert "not ready after 1s (ready_timeout)" in result.stderr
    assert "slow start" in result.stderr  # the service's own last log lines are shown
    status = platform.status()
    assert status["db"]["state"] == "failed" and status["db"]["pid"] is None
    assert status["api"]["state"] == "waiting"
    assert len(platform.events("spawned", "db")) == 1
    wait_gone([r["pid"] for r in platform.events("spawned", "db")])


def test_crash_loop_backs_off_then_fails_at_the_start_limit(platform: Platform) -> None:
    platform.add(
        "flaky", args="--oneshot 0.05 --exit-code 3", start_limit=3, start_limit_window="30s",
        backoff={"first": "100ms", "max": "400ms"}, failed_retry=0,
    )
    platform.write()
    result = platform.svc("up")
    assert result.returncode == 1
    status = platform.status()["flaky"]
    assert status["state"] == "failed"
    assert "start_limit" in status["reason"] and "exited with code 3" in status["reason"]
    spawns = [r["time"] for r in platform.events("spawned", "flaky")]
    assert len(spawns) == 4  # the first start and three restarts
    gaps = [b - a for a, b in zip(spawns, spawns[1:])]
    assert gaps[-1] >= 0.1  # backed off, not a tight loop
    assert status["restarts"] == 3


def test_sigkilled_service_is_restarted_and_counted(platform: Platform) -> None:
    port = platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    before = platform.status()["api"]
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> dict | None:
        s = platform.status()["api"]
        return s if s["state"] == "ready" and s["pid"] != before["pid"] else None

    after = wait_until(restarted, timeout=10, what="api to come back")
    assert after["restarts"] == 1  # type: ignore[index]
    assert port is not None and port_accepts(port)


def test_unhealthy_service_is_restarted_after_the_threshold(platform: Platform) -> None:
    platform.add("api", args="--fail-health-after 0.3", ready={"http": "/health"}, unhealthy_threshold=2)
    platform.write()
    platform.svc("up", check=True)
    wait_until(lambda: len(platform.events("listening", "api")) >= 2, timeout=10, what="a second start of the unhealthy api")
    status = platform.status()["api"]
    assert status["restarts"] >= 1


def test_stop_kills_a_service_that_ignores_sigterm_and_its_grandchildren(platform: Platform) -> None:
    platform.add("stubborn", args="--ignore-sigterm --grandchild --daemonize-grandchild", stop_timeout="1s")
    platform.write()
    platform.svc("up", check=True)
    main_pid = platform.status()["stubborn"]["pid"]
    tree = {p.pid for p in platform.our_processes()} - {platform.daemon_pid()}
    assert len(tree) >= 3, "the service, its grandchild and the escaped daemonized one"

    result = platform.svc("down", timeout=30)
    assert result.returncode == 0, result.stderr
    wait_gone(sorted(tree), timeout=3)
    assert main_pid in tree


def test_foreign_listener_is_a_conflict_and_is_left_alone(platform: Platform) -> None:
    port = platform.free_port()
    foreign = subprocess.Popen(
        [sys.executable, "-c", "import socket,time\ns=socket.socket();s.bind(('127.0.0.1',%d));s.listen();time.sleep(600)" % port],
    )
    try:
        wait_until(lambda: port_accepts(port), what="the foreign listener")
        platform.add("api", port=port)
        platform.write()
        result = platform.svc("up")
        assert result.returncode == 1
        assert f"port {port} is held by pid {foreign.pid}" in result.stderr
        status = platform.status()["api"]
        assert status["state"] == "conflict" and status["conflict_pid"] == foreign.pid
        assert platform.events("spawned") == []  # nothing spawned
        assert foreign.poll() is None  # and the foreign process is untouched

        foreign.kill()  # once the port is free, the service starts by itself
        foreign.wait()
        platform.wait_state("api", "ready", timeout=10)
    finally:
        foreign.kill()
        foreign.wait()


def test_status_and_other_commands_without_a_daemon(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    result = platform.svc("status")
    assert result.returncode == 3
    assert "no daemon is running" in result.stderr and "svc up" in result.stderr
    assert platform.svc("reload").returncode == 3
    assert platform.svc("down").returncode == 0  # nothing runs: nothing to stop


def test_two_ups_at_once_spawn_each_service_once(platform: Platform) -> None:
    platform.add("db", tier="infra", args="--delay 0.3")
    platform.add("api", depends_on=["db"])
    platform.write()
    results: list[subprocess.CompletedProcess[str]] = []

    def up() -> None:
        results.append(platform.svc("up"))

    threads = [threading.Thread(target=up) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    assert len(platform.events("spawned", "db")) == 1
    assert len(platform.events("spawned", "api")) == 1
    daemons = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and "supervisord_lite.daemon" in p.info["cmdline"] and str(platform.manifest) in " ".join(p.info["cmdline"])]
    assert len(daemons) == 1


def test_reload_adds_removes_and_restarts_changed_services(platform: Platform) -> None:
    platform.add("keep")
    platform.add("gone")
    platform.add("changed")
    platform.write()
    platform.svc("up", check=True)
    before = platform.status()

    del platform.services["gone"]
    platform.services["changed"]["env"] = {"NEW_SETTING": "1"}
    platform.add("added")
    platform.write()
    result = platform.svc("reload")
    assert result.returncode == 0, result.stderr
    assert "added: added" in result.stdout and "removed: gone" in result.stdout and "changed: changed" in result.stdout

    platform.wait_state("added", "ready")
    platform.wait_state("changed", "ready")
    after = platform.status()
    assert "gone" not in after
    assert after["keep"]["pid"] == before["keep"]["pid"]  # untouched
    assert after["changed"]["pid"] != before["changed"]["pid"]
    wait_gone([before["gone"]["pid"]])
    changed_env = psutil.Process(after["changed"]["pid"]).environ()
    assert changed_env["NEW_SETTING"] == "1"


def test_invalid_reload_keeps_the_running_manifest(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    pid = platform.status()["api"]["pid"]
    text = platform.manifest.read_text()
    platform.manifest.write_text(text + "\n[services.broken]\ntier = 'app'\nport = 70000\ncommand = 'x'\n")

    result = platform.svc("reload")
    assert result.returncode == 2
    assert "reload refused" in result.stderr and "services.broken" in result.stderr and "70000" in result.stderr
    status = platform.status()
    assert status["api"]["pid"] == pid and status["api"]["state"] == "ready" and "broken" not in status

    # SIGHUP reloads too, and equally refuses (counted, so we can wait for it)
    errors_before = json.loads(platform.svc("status", "--json", check=True).stdout)["reloads_error"]
    os.kill(platform.daemon_pid() or 0, signal.SIGHUP)
    wait_until(
        lambda: json.loads(platform.svc("status", "--json", check=True).stdout)["reloads_error"] > errors_before,
        what="the SIGHUP reload to be refused",
    )
    assert platform.status()["api"]["pid"] == pid
    platform.write()  # the valid manifest again
    assert platform.svc("reload").returncode == 0
    assert platform.status()["api"]["pid"] == pid


def test_daemon_sigterm_stops_every_service_and_exits_0(platform: Platform) -> None:
    platform.add("db", tier="infra")
    platform.add("api", depends_on=["db"], args="--grandchild")
    platform.write()
    platform.svc("up", check=True)
    daemon = psutil.Process(platform.daemon_pid())
    children = [p.pid for p in platform.our_processes() if p.pid != daemon.pid]
    assert len(children) >= 3
    daemon.send_signal(signal.SIGTERM)
    wait_until(lambda: not daemon.is_running() or daemon.status() == psutil.STATUS_ZOMBIE, timeout=15, what="the daemon to exit")
    wait_gone(children, timeout=2)
    stopping = {r["name"]: r["time"] for r in platform.events("stopping")}
    assert stopping["api"] < stopping["db"]


def test_daemon_sigkill_then_a_new_daemon_leaves_no_orphan(platform: Platform) -> None:
    db = platform.add("db", tier="infra")
    api = platform.add("api", depends_on=["db"], args="--grandchild")
    platform.write()
    platform.svc("up", check=True)
    old_daemon = platform.daemon_pid()
    assert old_daemon
    survivors = [p.pid for p in platform.our_processes() if p.pid != old_daemon]
    os.kill(old_daemon, signal.SIGKILL)
    wait_gone([old_daemon])
    assert all(psutil.pid_exists(pid) for pid in survivors)  # orphans, for now

    result = platform.svc("up")  # a new daemon: cleans up, then brings the platform up again
    assert result.returncode == 0, result.stderr
    wait_gone(survivors, timeout=5)
    status = platform.status()
    assert {s["state"] for s in status.values()} == {"ready"}
    assert all(s["pid"] not in survivors for s in status.values())
    assert port_accepts(db or 0) and port_accepts(api or 0)
    current = {p.pid for p in platform.our_processes()} - {platform.daemon_pid()}
    assert len(current) == 3  # db, api and api's grandchild: no duplicates


def test_restart_restarts_only_the_named_service(platform: Platform) -> None:
    platform.add("db", tier="infra")
    platform.add("api", depends_on=["db"])
    platform.write()
    platform.svc("up", check=True)
    before = platform.status()
    result = platform.svc("restart", "db")
    assert result.returncode == 0, result.stderr
    after = platform.status()
    assert after["db"]["pid"] != before["db"]["pid"] and after["db"]["state"] == "ready"
    assert after["api"]["pid"] == before["api"]["pid"]


def test_logs_show_timestamped_output(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    result = platform.svc("logs", "api", "-n", "5", "--timestamps")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines and all(re.match(r"api \| \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line) for line in lines), lines
    assert any("listening" in line for line in lines)
    plain = platform.svc("logs", "api", "-n", "5").stdout.splitlines()  # compose's default: no time
    assert [line.replace(line[6:31], "") for line in lines] == plain
    assert platform.svc("logs", "nope").returncode == 2


def test_up_with_an_unknown_name_is_a_usage_error(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    result = platform.svc("up", "apii")
    assert result.returncode == 2
    assert 'no service named "apii"' in result.stderr and 'did you mean "api"' in result.stderr





def test_reload_of_a_description_only_change_does_not_restart(platform: Platform) -> None:
    platform.add("api", description="old words")
    platform.write()
    platform.svc("up", check=True)
    before = platform.status()["api"]
    platform.services["api"]["description"] = "new words"
    platform.write()
    result = platform.svc("reload")
    assert result.returncode == 0, result.stderr
    after = platform.status()["api"]
    assert after["pid"] == before["pid"] and after["description"] == "new words"


def test_a_restarting_service_says_why(platform: Platform) -> None:
    platform.add("api", args="--delay 0.5")
    platform.write()
    platform.svc("up", check=True)
    os.kill(platform.status()["api"]["pid"], signal.SIGKILL)
    starting = platform.wait_state("api", "starting")
    assert starting["reason"] == "restarting after: killed by SIGKILL"
    assert platform.wait_state("api", "ready")["reason"] == ""


def test_status_names_leftovers_of_a_dead_daemon_and_down_counts_only_what_ran(platform: Platform) -> None:
    platform.add("db", tier="infra")
    platform.add("api", depends_on=["db"])
    platform.services["old"] = {"tier": "app", "status": "deprecated", "port": platform.free_port(), "replaced_by": "api"}
    platform.write()
    platform.svc("up", check=True)
    result = platform.svc("down", "api")
    assert result.stdout.strip() == "stopped 1 service: api"
    assert platform.svc("down", "api").stdout.strip() == "nothing was running of api"
    assert platform.svc("down").stdout.strip() == "stopped 1 service"  # db; the deprecated one never ran
    platform.svc("up", check=True)
    daemon = platform.daemon_pid()
    os.kill(daemon or 0, signal.SIGKILL)
    wait_gone([daemon or 0])
    result = platform.svc("status")
    assert result.returncode == 3
    assert "a previous daemon died leaving 2 service(s) running (api, db)" in result.stderr
    assert platform.svc("up").returncode == 0  # and `svc up` cleans up and takes over


def test_logs_line_counts(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    assert platform.svc("logs", "api", "-n", "0").stdout == ""
    assert len(platform.svc("logs", "api", "-n", "2").stdout.splitlines()) == 2
    assert platform.svc("logs", "api", "-n", "-1").returncode == 2


def test_piped_up_prints_changes_not_where_things_stood(platform: Platform) -> None:
    platform.add("db", tier="infra")
    platform.write()
    platform.svc("up", check=True)
    again = platform.svc("up")
    assert again.stdout.strip() == "1/1 services ready"  # nothing changed, nothing to tell
    restart = platform.svc("restart", "db")
    lines = restart.stdout.splitlines()
    # the restart's own steps (as many as the updates caught), then its readiness once: no
    # stale "db: ready" from before the restart, and the new readiness is never swallowed
    # because the state before and after it has the same name
    assert lines[-2].startswith("db: ready in") and lines[-1] == "1/1 services ready", lines
    assert all(line.split(" ")[1] in ("stopping", "stopped", "waiting", "starting") for line in lines[:-2]), lines


def test_a_service_that_cannot_run_says_why_once_without_repeating_its_name(platform: Platform) -> None:
    platform.add("bad", port=None, command="no-such-program-xyz --flag")
    platform.write()
    up = platform.svc("up")
    assert up.returncode == 1
    reason = platform.status()["bad"]["reason"]
    assert reason.startswith("cannot run 'no-such-program-xyz'"), reason  # not "bad: cannot run ..."
    assert "bad: failed (bad:" not in up.stdout + up.stderr, up.stdout + up.stderr


def test_a_service_listening_on_another_port_than_declared_is_told_which(platform: Platform) -> None:
    declared, actual = free_ports(2)
    platform.add("api", port=declared, ready_timeout="1s", failed_retry=0, restart="no",
                 command=f"{DEMO} --record {platform.records} --port {actual}")
    platform.write()
    result = platform.svc("up")
    assert result.returncode == 1
    reason = platform.status()["api"]["reason"]
    assert f"port {declared} never accepted a connection; it listens on {actual} instead" in reason, reason
    assert f"declare port = {actual}" in reason, reason
