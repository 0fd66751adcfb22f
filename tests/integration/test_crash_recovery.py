"""After the daemon dies, and at boot: real daemons, real services, real signals.

A daemon SIGKILLed leaves its services running. Without a daemon, `svc down` and
`svc shutdown` stop them (found by the state file's records, their sessions and their
instance marker, so redis-server, which writes its title over its environment, is
found too), say what they stopped, and exit 0 only when nothing is left. `svc up`
after a crash says what it stopped before it starts them again.

A daemon stopped with SIGTERM (as systemd stops it) remembers what was wanted; the
unit's start command, run again in the same state_dir (as after a reboot), brings
exactly that back, and a `svc down` before the stop is remembered.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisord_lite.core import paths
from supervisord_lite.host.recovery import DaemonState, RecordedProcess, find_survivors
from tests.conftest import ROOT, free_ports, wait_until
from tests.integration.harness import SVC, Platform, platform_other_users_can_enter, port_accepts, wait_gone

REDIS = shutil.which("redis-server")


def kill_daemon(platform: Platform) -> int:
    """SIGKILL the platform's daemon, as the OOM killer would; its services stay behind."""
    daemon = platform.daemon_pid()
    assert daemon and psutil.pid_exists(daemon)
    os.kill(daemon, signal.SIGKILL)
    wait_gone([daemon])
    return daemon


def service_pids(platform: Platform) -> dict[str, int]:
    return {name: s["pid"] for name, s in platform.status().items() if s["pid"]}


def state_file(platform: Platform) -> dict[str, Any]:
    return json.loads((platform.state_dir / "state.json").read_text())


@pytest.fixture
def booted() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Daemons a test started itself (as systemd would); each is stopped afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for daemon in started:
        if daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def three_tiers(platform: Platform) -> dict[str, int]:
    ports = dict(zip(["db", "api", "web"], free_ports(3)))
    platform.add("db", tier="infra", port=ports["db"], stop_signal="SIGINT")
    platform.add("api", port=ports["api"], depends_on=["db"], args="--grandchild")
    platform.add("web", tier="web", port=ports["web"], depends_on=["api"])
    platform.write()
    return ports


# ----------------------------------------------------------------------------- which processes are survivors


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # a session leader's group: it and what it started
        child.kill()
        child.wait()


def _record(proc: psutil.Process, **changes: Any) -> DaemonState:
    fields: dict[str, Any] = {"pid": proc.pid, "pgid": proc.pid, "create_time": proc.create_time(), "instance_id": "",
                              "sid": os.getsid(proc.pid), "uid": proc.uids().real}
    return DaemonState(processes={"svc": RecordedProcess(**{**fields, **changes})})


def test_a_recorded_process_counts_only_while_start_time_user_and_session_match(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    # a service as the daemon starts one: leading its own session, with a child that wrote over
    # its environment (no marker anywhere), in the session
    leader = subprocess.Popen(["sh", "-c", "env -i sleep 60 & exec sleep 60"], start_new_session=True, env={"PATH": "/usr/bin:/bin"})
    children.append(leader)
    proc = psutil.Process(leader.pid)
    wait_until(lambda: proc.children(), what="the child in the session")
    child = proc.children()[0].pid
    state_dir = tmp_path / ".svc"

    found = find_survivors(state_dir, _record(proc))
    assert [(s.service, s.pids, s.groups) for s in found] == [("svc", tuple(sorted([leader.pid, child])), frozenset({leader.pid}))]
    # the pid now belongs to another process (another start time), another user, or another session: not ours
    assert find_survivors(state_dir, _record(proc, create_time=proc.create_time() - 5)) == []
    assert find_survivors(state_dir, _record(proc, uid=proc.uids().real + 1)) == []
    assert find_survivors(state_dir, _record(proc, sid=leader.pid + 1)) == []
    # an old record without session or user (written before they were recorded): the start time
    # vouches for the pid, and leading its own session as our user for the process
    old = find_survivors(state_dir, _record(proc, sid=None, uid=None, instance_id="svcabc-1"))
    assert [s.pids for s in old] == [tuple(sorted([leader.pid, child]))]


def test_a_recorded_process_that_does_not_lead_its_session_never_brings_the_session_along(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """A process in the test's own session (as a program started some other way would be):
    its record may match, but the session is not the service's, so nothing else of it counts."""
    loner = subprocess.Popen(["sleep", "60"])
    children.append(loner)
    proc = psutil.Process(loner.pid)
    found = find_survivors(tmp_path / ".svc", _record(proc))
    assert [s.pids for s in found] == [(loner.pid,)]
    assert os.getpid() not in found[0].pids and found[0].groups == frozenset()


# ----------------------------------------------------------------------------- daemon death


def test_down_without_a_daemon_stops_the_survivors_in_order_and_says_what_it_stopped(platform: Platform) -> None:
    ports = three_tiers(platform)
    platform.svc("up", check=True)
    pids = service_pids(platform)
    kill_daemon(platform)
    survivors = {p.pid for p in platform.our_processes()}
    assert set(pids.values()) <= survivors and len(survivors) == 4  # api has a grandchild
    assert all(port_accepts(p) for p in ports.values())

    status = platform.svc("status")
    assert status.returncode == 3
    assert "a previous daemon died leaving 3 service(s) running (api, db, web)" in status.stderr

    result = platform.svc("down", timeout=60)
    assert result.returncode == 0, result.stderr
    said = result.stdout.strip()
    assert said.startswith(f"no daemon is running for {platform.manifest}; stopped what the last one left running: ")
    for name in ("web", "api", "db"):
        assert f"{name} (pid" in said and str(pids[name]) in said
    assert said.index("web (") < said.index("api (") < said.index("db ("), said  # dependents first, as the daemon does
    wait_gone(sorted(survivors), timeout=1)  # gone when `svc down` returns
    assert not any(port_accepts(p) for p in ports.values())
    assert platform.our_processes() == []

    # each with its own stop signal, dependents first
    stopping = {e["name"]: e for e in platform.events("stopping")}
    assert stopping["db"]["signal"] == "SIGINT" and stopping["api"]["signal"] == "SIGTERM"
    assert stopping["web"]["time"] <= stopping["api"]["time"] <= stopping["db"]["time"]
    # a `down` is what was asked for: nothing is wanted any more, nothing is recorded
    assert state_file(platform)["wanted"] == [] and state_file(platform)["processes"] == {}
    assert platform.svc("status").returncode == 3  # and `svc down` started no daemon

    again = platform.svc("down")
    assert (again.returncode, again.stdout.strip()) == (0, f"no daemon is running for {platform.manifest}: nothing to stop")


def test_shutdown_without_a_daemon_stops_the_survivors(platform: Platform) -> None:
    ports = three_tiers(platform)
    platform.svc("up", check=True)
    pids = service_pids(platform)
    kill_daemon(platform)
    survivors = {p.pid for p in platform.our_processes()}

    result = platform.svc("shutdown", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "stopped what the last one left running: web (pid" in result.stdout
    assert all(str(pid) in result.stdout for pid in pids.values())
    wait_gone(sorted(survivors), timeout=1)
    assert not any(port_accepts(p) for p in ports.values())
    # a shutdown is a stop, not a `down`: what was wanted stays wanted for the next daemon
    assert sorted(state_file(platform)["wanted"]) == ["api", "db", "web"]
    assert state_file(platform)["processes"] == {}
    assert platform.svc("shutdown").stdout.strip() == f"no daemon is running for {platform.manifest}: nothing to stop"
    # and a `down` with nothing left to stop still forgets what was wanted
    assert platform.svc("down").returncode == 0
    assert state_file(platform)["wanted"] == []


def test_down_of_one_service_without_a_daemon_stops_it_and_its_dependents_only(platform: Platform) -> None:
    ports = three_tiers(platform)
    platform.svc("up", check=True)
    pids = service_pids(platform)
    kill_daemon(platform)

    result = platform.svc("down", "api", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "api (pid" in result.stdout and "web (pid" in result.stdout and "db (" not in result.stdout
    wait_gone([pids["api"], pids["web"]])
    assert psutil.pid_exists(pids["db"]) and port_accepts(ports["db"])  # not asked for: still there
    assert state_file(platform)["wanted"] == ["db"] and list(state_file(platform)["processes"]) == ["db"]

    # the next daemon stops the rest and starts only what is still wanted
    up = platform.svc("up", "db", timeout=60)
    assert up.returncode == 0, up.stderr
    assert f"stopped what it left running: db (pid {pids['db']})" in up.stderr
    status = platform.status()
    assert status["db"]["state"] == "ready" and status["db"]["pid"] != pids["db"]
    assert status["api"]["state"] == "stopped" and status["web"]["state"] == "stopped"


def test_up_after_a_crash_says_what_it_stopped_and_takes_over(platform: Platform) -> None:
    ports = three_tiers(platform)
    platform.svc("up", check=True)
    before = service_pids(platform)
    kill_daemon(platform)
    survivors = {p.pid for p in platform.our_processes()}

    result = platform.svc("up", timeout=60)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "previous daemon died" in line]
    assert len(said) == 1, result.stderr
    assert all(f"{name} (pid" in said[0] and str(pid) in said[0] for name, pid in before.items()), said
    wait_gone(sorted(survivors), timeout=1)
    after = platform.status()
    assert {s["state"] for s in after.values()} == {"ready"}
    assert not set(before.values()) & {s["pid"] for s in after.values()}
    assert all(port_accepts(p) for p in ports.values())


def test_a_program_that_loses_its_marker_is_found_by_its_session(platform: Platform) -> None:
    """`env -i` replaces the environment, as a program that writes over it does: the
    SVC_INSTANCE marker is gone, the session stays."""
    port = platform.free_port()
    platform.services["bare"] = {
        "tier": "app",
        "command": ["env", "-i", sys.executable, "-m", "supervisord_lite.demo", "--port", str(port), "--name", "bare"],
        "cwd": str(ROOT),  # the demo must be importable with PYTHONPATH gone
        "port": port,
    }
    platform.write()
    platform.svc("up", check=True)
    pid = platform.status()["bare"]["pid"]
    assert "SVC_INSTANCE" not in psutil.Process(pid).environ()
    kill_daemon(platform)

    status = platform.svc("status")
    assert "leaving 1 service(s) running (bare)" in status.stderr, status.stderr
    result = platform.svc("down", timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"bare (pid {pid})" in result.stdout
    wait_gone([pid], timeout=1)
    assert not port_accepts(port)


def add_redis(platform: Platform) -> int:
    assert REDIS is not None
    port = platform.free_port()
    platform.services["cache"] = {
        "tier": "infra",
        "command": [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(platform.root), "--logfile", str(platform.root / "redis.log")],
        "port": port,
        "ready": {"exec": f"redis-cli -p {port} ping"},
    }
    platform.write()
    return port


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
def test_a_real_redis_server_is_found_and_stopped_after_the_daemon_dies(platform: Platform) -> None:
    port = add_redis(platform)
    platform.svc("up", check=True)
    pid = platform.status()["cache"]["pid"]
    redis = psutil.Process(pid)
    # redis-server writes its process title over its environment: the marker is gone
    assert "SVC_INSTANCE" not in redis.environ(), "redis kept its environment: this test proves nothing here"
    kill_daemon(platform)
    assert redis.is_running() and port_accepts(port)

    status = platform.svc("status")
    assert "leaving 1 service(s) running (cache)" in status.stderr, status.stderr
    result = platform.svc("down", timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"cache (pid {pid})" in result.stdout
    wait_gone([pid], timeout=1)
    assert not port_accepts(port)
    # stopped as its service says (SIGTERM: a clean shutdown), not killed (its output pipe died
    # with the daemon: its own log file tells)
    logged = (platform.root / "redis.log").read_text()
    assert "Received SIGTERM scheduling shutdown" in logged and "ready to exit, bye bye" in logged, logged


def test_down_leaves_a_starting_daemon_alone(platform: Platform, booted: list[subprocess.Popen[bytes]]) -> None:
    """A new daemon that holds the lock but does not serve yet (it is still stopping a
    stubborn survivor) owns what it finds: `svc down` must not stop it under its feet."""
    port = platform.add("stubborn", args="--ignore-sigterm", stop_timeout="120s")  # far beyond the CLI's 5 s wait
    platform.write()
    platform.svc("up", check=True)
    pid = platform.status()["stubborn"]["pid"]
    kill_daemon(platform)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(platform.root / "boot.log", "ab") as log:
        reaper = subprocess.Popen([*SVC, "daemon", "-f", str(platform.manifest)], cwd="/", env=env,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    booted.append(reaper)
    wait_until(lambda: platform.events("sigterm_ignored"), timeout=20, what="the new daemon to signal the survivor")

    result = platform.svc("down", timeout=60)
    assert result.returncode == 1, result
    assert f"a daemon (pid {reaper.pid}) holds the lock but does not answer" in result.stderr
    assert psutil.pid_exists(pid) and port_accepts(port or 0)  # the CLI stopped nothing
    assert len(platform.events("sigterm_ignored")) == 1  # and signalled nothing


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
def test_a_new_daemon_stops_the_real_redis_server_a_dead_one_left_and_starts_it_again(
    platform: Platform, booted: list[subprocess.Popen[bytes]]
) -> None:
    """The daemon's own reap (systemd restarting it) finds the very same set as the CLI."""
    port = add_redis(platform)
    platform.svc("up", check=True)
    old = platform.status()["cache"]["pid"]
    assert "SVC_INSTANCE" not in psutil.Process(old).environ()
    kill_daemon(platform)

    start_as_systemd_does(platform, booted)
    wait_gone([old], timeout=1)  # stopped before the new daemon served anything
    assert "Received SIGTERM scheduling shutdown" in (platform.root / "redis.log").read_text()
    logged = [json.loads(line) for line in (platform.root / "boot.log").read_text().splitlines() if line.startswith("{")]
    assert [e["services"] for e in logged if e.get("event") == "stopped processes left by a previous daemon"] == [
        {"cache": [old]}
    ]
    assert restored(platform) == [["cache"]]
    ready = platform.wait_state("cache", "ready", timeout=30)
    assert ready["pid"] != old and port_accepts(port)


# ----------------------------------------------------------------------------- what cannot be stopped


def _python_for(user: pwd.struct_passwd) -> tuple[list[str], dict[str, str]] | None:
    """A Python interpreter ``user`` may run that imports this package, or None."""
    site = sysconfig.get_paths()["purelib"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}{os.pathsep}{site}", "HOME": "/tmp", "LANG": "C.UTF-8"}
    for python in (sys.executable, "/usr/bin/python3"):
        try:
            probe = subprocess.run([python, "-c", "import supervisord_lite.cli"], user=user.pw_uid, group=user.pw_gid,
                                   extra_groups=[], env=env, capture_output=True, cwd="/tmp")
        except (PermissionError, FileNotFoundError):
            continue
        if probe.returncode == 0:
            return [python], env
    return None


@pytest.fixture
def shared_platform() -> Iterator[Platform]:
    with platform_other_users_can_enter("svc-crash-") as p:
        yield p


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as a second user")
def test_shutdown_that_cannot_stop_a_survivor_exits_1_naming_it(shared_platform: Platform) -> None:
    platform = shared_platform
    port = platform.add("api")
    platform.write()
    os.chmod(platform.manifest, 0o644)
    platform.svc("up", check=True)
    pid = platform.status()["api"]["pid"]
    kill_daemon(platform)
    nobody = pwd.getpwnam("nobody")
    found = _python_for(nobody)
    if found is None:
        pytest.skip("no Python interpreter the nobody user can run with this package")
    python, env = found
    os.chmod(platform.state_dir, 0o755)  # private (0700) by default: let nobody look in, as an older version allowed
    os.chmod(paths.socket_path_for(platform.state_dir), 0o666)  # the dead daemon's socket: nobody can try it, and finds no one

    def shutdown_as_nobody() -> subprocess.CompletedProcess[str]:
        return subprocess.run([*python, "-m", "supervisord_lite", "shutdown", "--manifest", str(platform.manifest)],
                              user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], env=env,
                              capture_output=True, text=True, timeout=60, cwd="/tmp")

    # the state file is private (0600): nobody cannot tell what is left, so claims nothing
    blind = shutdown_as_nobody()
    assert blind.returncode == 1 and "cannot read" in blind.stderr and "state.json" in blind.stderr, blind
    assert psutil.pid_exists(pid) and port_accepts(port or 0)

    # with the file readable too: root's survivors are not nobody's to signal: found (by the
    # root-owned state file's record and the session), reported, exit 1, and nothing touched
    os.chmod(platform.state_dir / "state.json", 0o644)
    refused = shutdown_as_nobody()
    assert refused.returncode == 1, refused
    assert f"still running, could not be stopped: api (pid {pid})" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert psutil.pid_exists(pid) and port_accepts(port or 0)

    done = platform.svc("shutdown", timeout=60)
    assert done.returncode == 0 and f"api (pid {pid})" in done.stdout, done
    wait_gone([pid], timeout=1)


# ----------------------------------------------------------------------------- boot


def start_as_systemd_does(platform: Platform, booted: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """The unit's ExecStart (`svc daemon -f MANIFEST`), from / with a bare environment;
    returns once it serves requests (when systemd would get READY=1)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8"}
    with open(platform.root / "boot.log", "ab") as log:
        daemon = subprocess.Popen([*SVC, "daemon", "-f", str(platform.manifest), "--json-logs"], cwd="/", env=env,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    booted.append(daemon)
    wait_until(lambda: platform.daemon_pid() == daemon.pid and platform.svc("status").returncode == 0, timeout=30,
               what="the daemon to serve")
    return daemon


def restored(platform: Platform) -> list[list[str]]:
    """What each boot's daemon said it started again (it says so before it serves)."""
    lines = [json.loads(line) for line in (platform.root / "boot.log").read_text().splitlines() if line.startswith("{")]
    return [line["services"] for line in lines if line.get("event") == "starting what the previous daemon was asked to run"]


def stop_as_systemd_does(platform: Platform, daemon: int) -> None:
    """SIGTERM to the daemon only (KillMode=mixed); it stops every service itself."""
    services = {p.pid for p in platform.our_processes()} - {daemon}
    os.kill(daemon, signal.SIGTERM)
    wait_gone([daemon, *services], timeout=60)


def test_after_a_reboot_the_unit_brings_back_exactly_what_was_wanted(
    platform: Platform, booted: list[subprocess.Popen[bytes]]
) -> None:
    ports = dict(zip(["db", "api", "web", "extra"], free_ports(4)))
    platform.add("db", tier="infra", port=ports["db"])
    platform.add("api", port=ports["api"], depends_on=["db"])
    platform.add("web", tier="web", port=ports["web"], depends_on=["api"])
    platform.add("extra", port=ports["extra"])  # never asked for
    platform.write()
    platform.svc("up", "web", check=True)
    stop_as_systemd_does(platform, platform.daemon_pid() or 0)
    assert not any(port_accepts(p) for p in ports.values())
    assert sorted(state_file(platform)["wanted"]) == ["api", "db", "web"]
    spawned_before = len(platform.events("spawned"))

    daemon = start_as_systemd_does(platform, booted)
    assert restored(platform) == [["db", "api", "web"]]

    def ready() -> bool:
        status = platform.status()
        return all(status[n]["state"] == "ready" for n in ("db", "api", "web"))

    wait_until(ready, timeout=30, interval=0.1, what="every wanted service ready")
    assert all(port_accepts(ports[n]) for n in ("db", "api", "web"))
    assert platform.status()["extra"]["state"] == "stopped" and not port_accepts(ports["extra"])
    spawned = [e["name"] for e in platform.events("spawned")[spawned_before:]]
    assert sorted(spawned) == ["api", "db", "web"]  # each once, in order
    assert spawned.index("db") < spawned.index("api") < spawned.index("web")

    # and again: a daemon that comes back keeps bringing them back
    stop_as_systemd_does(platform, daemon.pid)
    assert daemon.wait(timeout=10) == 0
    start_as_systemd_does(platform, booted)
    assert restored(platform) == [["db", "api", "web"]] * 2
    wait_until(ready, timeout=30, interval=0.1, what="every wanted service ready after the second boot")


def test_down_before_the_stop_is_remembered_at_boot(platform: Platform, booted: list[subprocess.Popen[bytes]]) -> None:
    ports = three_tiers(platform)
    platform.svc("up", check=True)
    assert platform.svc("down", "web").returncode == 0
    stop_as_systemd_does(platform, platform.daemon_pid() or 0)
    assert sorted(state_file(platform)["wanted"]) == ["api", "db"]

    daemon = start_as_systemd_does(platform, booted)
    assert restored(platform) == [["db", "api"]]
    wait_until(lambda: platform.status()["api"]["state"] == "ready", timeout=30, what="api ready")
    assert platform.status()["db"]["state"] == "ready"
    assert platform.status()["web"]["state"] == "stopped" and not port_accepts(ports["web"])

    # `svc down` of everything, then a stop: the next boot starts nothing
    assert platform.svc("down", timeout=60).returncode == 0
    stop_as_systemd_does(platform, daemon.pid)
    spawned_before = len(platform.events("spawned"))
    start_as_systemd_does(platform, booted)
    assert restored(platform) == [["db", "api"]]  # this time, nothing
    status = platform.status()
    assert {s["state"] for s in status.values()} == {"stopped"}, status
    assert len(platform.events("spawned")) == spawned_before
    # and `svc up` still works as before
    assert platform.svc("up", timeout=60).returncode == 0


def test_restore_off_starts_nothing_at_boot(platform: Platform, booted: list[subprocess.Popen[bytes]]) -> None:
    platform.supervisor["restore"] = False
    port = platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    stop_as_systemd_does(platform, platform.daemon_pid() or 0)
    assert state_file(platform)["wanted"] == ["api"]  # still remembered; just not acted on

    start_as_systemd_does(platform, booted)
    assert restored(platform) == []
    assert platform.status()["api"]["state"] == "stopped"
    assert len(platform.events("spawned")) == 1 and not port_accepts(port or 0)


def test_a_state_file_of_another_user_is_not_followed_at_boot(
    platform: Platform, booted: list[subprocess.Popen[bytes]]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    port = platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    stop_as_systemd_does(platform, platform.daemon_pid() or 0)
    os.chown(platform.state_dir / "state.json", pwd.getpwnam("nobody").pw_uid, -1)

    start_as_systemd_does(platform, booted)
    assert restored(platform) == []
    assert "not following a state file of another user" in (platform.root / "boot.log").read_text()
    assert platform.status()["api"]["state"] == "stopped" and not port_accepts(port or 0)


# ----------------------------------------------------------------------------- restart counts


def _restarts_metric(port: int, service: str) -> float:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "svc_service_restarts_total" and s.labels.get("service") == service)


def test_restart_counts_survive_a_reload_and_a_new_daemon_and_an_explicit_restart_clears_them(
    platform: Platform, booted: list[subprocess.Popen[bytes]]
) -> None:
    (metrics_port,) = free_ports(1)
    platform.supervisor["metrics"] = f"127.0.0.1:{metrics_port}"
    platform.add("api", backoff={"first": "100ms", "max": "100ms"})
    platform.write()
    platform.svc("up", check=True)

    def crash() -> dict[str, Any]:
        pid = platform.status()["api"]["pid"]
        os.kill(pid, signal.SIGKILL)
        return wait_until(lambda: (s := platform.status()["api"])["state"] == "ready" and s["pid"] != pid and s,
                          timeout=15, what="api restarted")

    assert crash()["restarts"] == 1
    platform.services["api"]["command"] += " --description v2"  # a new definition: the reload restarts api
    platform.write()
    reloaded = platform.svc("reload", check=True)
    assert "api" in reloaded.stdout
    after = platform.wait_state("api", "ready")
    assert after["restarts"] == 1 and after["restarts_total"] == 1
    assert crash()["restarts"] == 2
    assert _restarts_metric(metrics_port, "api") == 2

    # an explicit restart starts the shown count again; the metric, a Prometheus counter, does not go back
    platform.svc("restart", "api", check=True)
    assert platform.status()["api"]["restarts"] == 0
    assert _restarts_metric(metrics_port, "api") == 2
    assert crash()["restarts"] == 1

    # a new daemon (systemd restarting it) goes on from the state file's count; its own counter starts at 0
    wait_until(lambda: state_file(platform).get("restarts") == {"api": 1}, what="the count in the state file")
    stop_as_systemd_does(platform, platform.daemon_pid() or 0)
    start_as_systemd_does(platform, booted)
    resumed = platform.wait_state("api", "ready", timeout=30)
    assert resumed["restarts"] == 1 and resumed["restarts_total"] == 0
    assert _restarts_metric(metrics_port, "api") == 0
    # and an explicit up of a stopped service starts from 0 (of a running one, it changes nothing)
    platform.svc("up", "api", check=True)
    assert platform.status()["api"]["restarts"] == 1
    platform.svc("down", "api", check=True)
    assert platform.status()["api"]["restarts"] == 1
    platform.svc("up", "api", check=True)
    assert platform.status()["api"]["restarts"] == 0
