"""The state_dir belongs to the daemon: another local user can neither lend it a folder,
nor plant links in it, nor forge the state file into killing a process that is not ours.

The daemon runs as root here, as under systemd; the other user is ``nobody`` (a
throwaway account made with useradd where there is none), acting through
``subprocess.run(user=...)``. A root-only "victim" file outside the state_dir shows
whether a planted link was ever followed: its bytes and mode must not change.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from supervisord_lite.cli import transport
from supervisord_lite.core import paths
from tests.conftest import wait_until
from tests.integration.harness import SVC, Platform, platform_other_users_can_enter
from tests.reliability.conftest import Usage, daemon_usage

pytestmark = pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root to act as a second user")

VICTIM_TEXT = "root's own file: nobody may change it\n"
RELOADS = 100
FD_TOLERANCE = 3  # descriptors; measured: 0 difference (207 more before the fix)


# -- the second user and the platform ------------------------------------------------


@pytest.fixture(scope="module")
def stranger() -> Iterator[pwd.struct_passwd]:
    """Another local account: ``nobody``, or a throwaway one created (and removed) here."""
    try:
        yield pwd.getpwnam("nobody")
        return
    except KeyError:
        pass
    name = f"svc-stranger-{os.getpid()}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


def as_user(user: pwd.struct_passwd, *command: str) -> None:
    subprocess.run(list(command), user=user.pw_uid, group=user.pw_gid, extra_groups=[], check=True, cwd="/",
                   env={"PATH": "/usr/bin:/bin"}, timeout=30)


@pytest.fixture
def shared() -> Iterator[Platform]:
    """A platform in a /tmp folder every user may create things in (sticky, like /tmp)."""
    with platform_other_users_can_enter("svc-trust-") as p:
        os.chmod(p.root, 0o1777)
        yield p


@pytest.fixture
def victims(tmp_path: Path) -> dict[str, Path]:
    """Root-only files a planted link could point at, outside any state_dir."""
    made = {}
    for name in ("lock", "state", "tmp", "daemonlog", "log", "rotated"):
        path = tmp_path / f"victim-{name}"
        path.write_text(VICTIM_TEXT)
        os.chmod(path, 0o600)
        made[name] = path
    return made


def assert_untouched(victims: dict[str, Path]) -> None:
    for path in victims.values():
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, path
        assert path.read_text() == VICTIM_TEXT, f"{path} was written through a planted link"


def run_daemon_foreground(platform: Platform) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SVC, "daemon", "--manifest", str(platform.manifest)], capture_output=True, text=True,
                          timeout=30, cwd=platform.root, stdin=subprocess.DEVNULL)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def daemon_log(platform: Platform) -> list[dict[str, object]]:
    entries = []
    for line in (platform.state_dir / "daemon.log").read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def sleeper(started: list[subprocess.Popen[bytes]], *, user: pwd.struct_passwd | None = None,
            own_session: bool = False, marker: str | None = None) -> psutil.Process:
    """A `sleep` that is not one of the platform's services."""
    env = {"PATH": "/usr/bin:/bin"}
    if marker:
        env["SVC_INSTANCE"] = marker
    kwargs: dict[str, object] = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    proc = subprocess.Popen(["sleep", "300"], env=env, start_new_session=own_session, cwd="/", **kwargs)  # type: ignore[call-overload]
    started.append(proc)
    return psutil.Process(proc.pid)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def record(proc: psutil.Process, instance_id: str) -> dict[str, object]:
    return {"pid": proc.pid, "pgid": proc.pid, "create_time": proc.create_time(), "instance_id": instance_id}


def text_of(path: Path) -> str:
    """The file's text, or "" while a rotation has it renamed away."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def recorded_pid(path: Path, name: str) -> object:
    try:
        return json.loads(path.read_text())["processes"].get(name, {}).get("pid")
    except (OSError, ValueError, KeyError):
        return None


def write_state_file(platform: Platform, processes: dict[str, dict[str, object]], wanted: list[str]) -> Path:
    platform.state_dir.mkdir(mode=0o700, exist_ok=True)
    path = platform.state_dir / "state.json"
    path.write_text(json.dumps({"daemon_pid": 999999, "manifest": str(platform.manifest), "wanted": wanted,
                                "processes": processes}))
    os.chmod(path, 0o600)
    return path


# -- the folder itself ---------------------------------------------------------------


def test_a_state_dir_another_user_made_first_is_refused(shared: Platform, stranger: pwd.struct_passwd,
                                                         victims: dict[str, Path]) -> None:
    shared.add("api", port=None, args="")
    shared.write()
    # the other user makes the folder first and plants a link where the lock belongs
    as_user(stranger, "mkdir", "-m", "755", str(shared.state_dir))
    as_user(stranger, "ln", "-s", str(victims["lock"]), str(shared.state_dir / "daemon.lock"))
    as_user(stranger, "ln", "-s", str(victims["daemonlog"]), str(shared.state_dir / "daemon.log"))

    up = shared.svc("up")
    assert up.returncode == 2, up
    for word in (str(shared.state_dir), stranger.pw_name, "0755", "root", "chown"):
        assert word in up.stderr, (word, up.stderr)
    assert "Traceback" not in up.stderr
    daemon = run_daemon_foreground(shared)
    assert daemon.returncode == 2, daemon
    assert stranger.pw_name in daemon.stderr and "0755" in daemon.stderr and "Traceback" not in daemon.stderr
    assert_untouched(victims)
    assert shared.our_processes() == []
    assert os.lstat(shared.state_dir).st_uid == stranger.pw_uid  # refused, not taken over


@pytest.mark.parametrize("mode, who", [(0o775, "group"), (0o757, "others"), (0o1777, "group and others")])
def test_a_state_dir_others_may_write_in_is_refused(platform: Platform, mode: int, who: str) -> None:
    platform.add("api", port=None)
    platform.write()
    platform.state_dir.mkdir()
    os.chmod(platform.state_dir, mode)
    up = platform.svc("up")
    assert up.returncode == 2, up
    assert f"writable by {who}" in up.stderr and f"{mode:04o}" in up.stderr and f"chmod 700 {platform.state_dir}" in up.stderr
    daemon = run_daemon_foreground(platform)
    assert daemon.returncode == 2 and f"{mode:04o}" in daemon.stderr, daemon
    assert mode_of(platform.state_dir) == mode and not (platform.state_dir / "daemon.lock").exists()
    assert platform.our_processes() == []


def test_a_state_dir_or_logs_folder_that_is_a_link_is_refused(platform: Platform, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    platform.add("api", port=None)
    platform.write()
    platform.state_dir.symlink_to(elsewhere)
    up = platform.svc("up")
    assert up.returncode == 2 and "symbolic link" in up.stderr and str(elsewhere) in up.stderr, up
    assert list(elsewhere.iterdir()) == []

    platform.state_dir.unlink()
    platform.state_dir.mkdir(mode=0o700)
    (platform.state_dir / "logs").symlink_to(elsewhere)
    daemon = run_daemon_foreground(platform)
    assert daemon.returncode == 2, daemon
    assert "supervisor.state_dir (logs)" in daemon.stderr and "symbolic link" in daemon.stderr
    assert list(elsewhere.iterdir()) == []
    assert platform.our_processes() == []


# -- the files in it -----------------------------------------------------------------


def test_planted_links_are_replaced_and_never_followed(platform: Platform, victims: dict[str, Path]) -> None:
    """Links left in a folder that is now the daemon's (say it was chowned after a refusal):
    each is removed and replaced by a fresh 0600 file; no target is opened."""
    platform.supervisor.update(log_max_bytes="4KiB", log_backups=2)
    platform.add("api", port=None, args="--flood-bytes 20000")
    platform.write()
    state = platform.state_dir
    (state / "logs").mkdir(parents=True, mode=0o700)
    os.chmod(state, 0o700)
    links = {
        state / "daemon.lock": victims["lock"],
        state / "state.json": victims["state"],
        state / "state.tmp": victims["tmp"],
        state / "daemon.log": victims["daemonlog"],
        state / "logs" / "api.log": victims["log"],
        state / "logs" / "api.log.1": victims["rotated"],
    }
    for link, target in links.items():
        link.symlink_to(target)

    up = platform.svc("up")
    assert up.returncode == 0, up
    wait_until(lambda: any("flood done" in text_of(state / "logs" / name) for name in ("api.log", "api.log.1")),
               timeout=20, what="the flood to be logged (and the log rotated)")
    api_pid = platform.status()["api"]["pid"]
    wait_until(lambda: recorded_pid(state / "state.json", "api") == api_pid, timeout=10, what="the state file to name api")
    assert_untouched(victims)
    for link in links:
        if link.name == "state.tmp":
            assert not os.path.lexists(link)  # renamed over state.json
            continue
        assert not link.is_symlink() and link.is_file(), link
        assert mode_of(link) == 0o600, (link, oct(mode_of(link)))
    said = " ".join(str(e.get("event")) for e in daemon_log(platform))
    assert f"{state / 'daemon.lock'} was a symbolic link to {victims['lock']}" in said
    assert f"{state / 'logs' / 'api.log'} was a symbolic link" in said
    assert "state file ignored" in said
    assert f"{state / 'daemon.log'} was a symbolic link" in up.stderr  # the CLI opens the daemon's log


def test_files_are_created_private(platform: Platform) -> None:
    platform.supervisor.update(log_max_bytes="4KiB", log_backups=2)
    platform.add("api", port=None, args="--flood-bytes 20000")
    platform.add("old", port=None)
    platform.write()
    logs = platform.state_dir / "logs"
    platform.state_dir.mkdir(mode=0o700)
    logs.mkdir(mode=0o700)
    (logs / "old.log").write_text("written when logs were 0644\n")
    os.chmod(logs / "old.log", 0o644)
    platform.svc("up", check=True)
    wait_until(lambda: (logs / "api.log.1").exists() and (platform.state_dir / "state.json").exists(), timeout=20,
               what="a rotation and the state file")
    assert mode_of(platform.state_dir) == 0o700 and mode_of(logs) == 0o700
    for name in ("daemon.lock", "daemon.log", "state.json", "logs/api.log", "logs/api.log.1", "logs/old.log"):
        assert mode_of(platform.state_dir / name) == 0o600, (name, oct(mode_of(platform.state_dir / name)))
    assert (logs / "old.log").read_text().startswith("written when logs were 0644")  # tightened, kept


def test_files_are_created_private_in_a_fresh_folder(platform: Platform) -> None:
    platform.supervisor["state_dir"] = "run/state"
    platform.add("api", port=None)
    platform.write()
    platform.svc("up", check=True)
    state = platform.root / "run" / "state"
    assert mode_of(state) == 0o700 and mode_of(state / "logs") == 0o700
    for name in ("daemon.lock", "daemon.log", "logs/api.log"):
        assert mode_of(state / name) == 0o600, name
    wait_until(lambda: (state / "state.json").exists(), timeout=10, what="the state file")
    assert mode_of(state / "state.json") == 0o600
    platform.svc("shutdown", check=True)


# -- the state file ------------------------------------------------------------------


def test_a_forged_state_file_does_not_kill_processes_that_are_not_ours(
    platform: Platform, stranger: pwd.struct_passwd, started: list[subprocess.Popen[bytes]]
) -> None:
    """pid and start time copied from /proc are not enough: the process must run as the
    daemon's uid (or the service's user) and carry its marker or lead its own session."""
    platform.add("api", port=None)
    platform.write()
    prefix = paths.instance_prefix(platform.state_dir)
    strangers = sleeper(started, user=stranger, own_session=True, marker=f"{prefix}forged1")
    roots = sleeper(started)  # root's, in our session: no marker, not a session leader
    marked_elsewhere = sleeper(started, marker="svcdeadbeef-someone-else")
    leader = sleeper(started, own_session=True)  # a session leader of our uid: what a service's main process is
    write_state_file(platform, {
        "api": record(strangers, f"{prefix}forged1"),
        "web": record(roots, f"{prefix}forged2"),
        "db": record(marked_elsewhere, f"{prefix}forged3"),
        "cache": record(leader, f"{prefix}forged4"),
    }, wanted=[])

    up = platform.svc("up", check=True)
    for proc in (strangers, roots, marked_elsewhere):
        assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE, proc
    # the control: a recorded pid that does meet the rule is stopped, so the file was read
    wait_until(lambda: started[3].poll() is not None, timeout=10, what="the recorded session leader to be stopped")
    assert started[3].returncode == -signal.SIGTERM
    # `svc up` looks at what a dead daemon left before it starts one, and says what it will not touch
    warning = next(line for line in up.stderr.splitlines() if "is not a service of ours" in line)
    for name, proc in (("api", strangers), ("web", roots), ("db", marked_elsewhere)):
        assert f"{name} (pid {proc.pid})" in warning, (name, warning)


def test_a_state_file_another_user_owns_is_ignored(
    platform: Platform, stranger: pwd.struct_passwd, started: list[subprocess.Popen[bytes]]
) -> None:
    platform.add("api", port=None)
    platform.add("web", port=None)
    platform.write()
    prefix = paths.instance_prefix(platform.state_dir)
    leader = sleeper(started, own_session=True)
    path = write_state_file(platform, {"api": record(leader, f"{prefix}forged")}, wanted=["api"])
    os.chown(path, stranger.pw_uid, stranger.pw_gid)

    platform.svc("up", "web", check=True)
    status = platform.status()
    assert status["web"]["state"] == "ready" and status["api"]["state"] == "stopped", status  # nothing resumed
    assert leader.is_running() and leader.status() != psutil.STATUS_ZOMBIE  # nothing stopped
    ignored = [e for e in daemon_log(platform) if e.get("event") == "state file ignored"]
    assert len(ignored) == 1 and f"owned by {stranger.pw_name}" in str(ignored[0]["reason"])

    # the same file, the daemon's own: it is believed (so the owner alone made the difference)
    platform.svc("shutdown", check=True)
    path = write_state_file(platform, {"api": record(leader, f"{prefix}forged")}, wanted=["api"])
    platform.svc("up", "web", check=True)
    wait_until(lambda: started[0].poll() is not None, timeout=10, what="the recorded session leader to be stopped")
    platform.wait_state("api", "ready")


# -- descriptors across reloads ------------------------------------------------------


def settled_usage(platform: Platform) -> Usage:
    samples: list[Usage] = []

    def stable() -> Usage | None:
        samples.append(daemon_usage(platform))
        last = samples[-3:]
        return last[-1] if len(last) == 3 and len({u.fds for u in last}) == 1 else None

    return wait_until(stable, timeout=20, interval=0.3, what="the daemon's descriptors to settle")  # type: ignore[return-value]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["worker", "web"])
def test_reloads_that_replace_a_service_leave_the_descriptor_count_flat(platform: Platform, kind: str) -> None:
    if kind == "worker":
        platform.services["api"] = {"tier": "app", "command": ["sleep", "3600"], "stop_timeout": "5s", "env": {"GEN": "0"}}
    else:  # a port, an HTTP readiness check and a health probe: sockets too, every generation
        platform.add("api", stop_timeout="5s", env={"GEN": "0"}, ready={"http": "/health"})
    platform.write()
    platform.svc("up", check=True)
    sock = paths.socket_path_for(platform.state_dir)

    def replace_api(generation: int) -> None:
        old = transport.call(sock, "status", {"usage": False}, timeout=10)
        old_pid = next(s["pid"] for s in old["services"] if s["name"] == "api")
        platform.services["api"]["env"] = {"GEN": str(generation)}
        platform.write()
        result = transport.call(sock, "reload", {}, timeout=30)
        assert result["changed"] == ["api"], result

        def running_again() -> bool:
            snap = transport.call(sock, "status", {"usage": False}, timeout=10)
            api = next(s for s in snap["services"] if s["name"] == "api")
            return api["state"] == "ready" and api["pid"] not in (None, old_pid)

        wait_until(running_again, timeout=20, interval=0.01, what=f"api to run again after reload {generation}")

    for generation in range(1, 4):  # warm up: what the first reloads allocate, later ones reuse
        replace_api(generation)
    before = settled_usage(platform)
    t0 = time.monotonic()
    for generation in range(4, 4 + RELOADS):
        replace_api(generation)
    after = settled_usage(platform)
    print(f"\n{RELOADS} reloads replacing a service in {time.monotonic() - t0:.1f}s; daemon before: {before}; after: {after}")
    assert after.fds - before.fds <= FD_TOLERANCE, f"descriptors: before {before}, after {after}"
    assert platform.status()["api"]["state"] == "ready"
    # every replacement wrote to its own log object (each one held the file open once)
    assert (platform.state_dir / "logs" / "api.log").read_text().count("--- svc: started pid") == 4 + RELOADS
