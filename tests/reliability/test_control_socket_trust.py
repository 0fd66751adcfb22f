"""The control socket cannot be impersonated, and its clients are bounded.

Another local account (made here with useradd, removed afterwards) plays the
attacker: its listener at the socket path, or its folder where a user's private
socket folder goes, is refused by the CLI with a message naming it, before a byte
is sent, and nothing is started. A symlink or a folder at the socket path is a clear
error, never a traceback. A daemon short of descriptors and flooded with idle
connections still answers its own user at once; 10,000 connections leave nothing
behind; and of 20 cold `svc up` at once exactly one says it started the daemon.
"""

from __future__ import annotations

import json
import os
import pwd
import resource
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from supervisord_lite.cli import transport
from supervisord_lite.core import paths
from supervisord_lite.core.protocol import ControlError
from supervisord_lite.core.snapshot import ServiceSnapshot, SupervisorSnapshot
from supervisord_lite.core.states import ServiceState
from tests.conftest import ROOT, wait_until
from tests.integration.harness import SVC, Platform
from tests.reliability.conftest import daemon_usage

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to create and act as other local accounts")

# The attacker's listener: plain Python, run as the other account on a socket the test
# bound at the path under attack. It prints every request it receives, and answers
# each with what an impostor would: a fabricated all-ready table, "nothing to start".
FAKE_LISTENER = r"""
import json, socket, sys
listener = socket.socket(fileno=int(sys.argv[1]))
listener.listen(64)
fabricated = json.loads(sys.argv[2])
answers = {"ping": {"pid": fabricated["pid"], "manifest": fabricated["manifest"]}, "status": fabricated,
           "up": {"services": [], "all_ready": True, "tails": {}}, "down": {"stopped": [], "services": []}}
print("listening", flush=True)
while True:
    conn, _ = listener.accept()
    conn.settimeout(5)
    try:
        line = conn.makefile("rb").readline()
        if line:
            print("request", line.decode(errors="replace").strip(), flush=True)
            op = json.loads(line).get("op")
            conn.sendall(json.dumps({"done": True, "ok": True, "result": answers.get(op, {})}).encode() + b"\n")
    except (OSError, ValueError):
        pass
    conn.close()
"""


# ----------------------------------------------------------------------------- other local accounts


@contextmanager
def local_account(prefix: str) -> Iterator[pwd.struct_passwd]:
    """A fresh system account with no home and no shell, removed afterwards."""
    useradd, userdel = shutil.which("useradd"), shutil.which("userdel")
    if os.getuid() != 0 or not useradd or not userdel:
        pytest.skip("needs root and useradd to create a second local account")
    name = f"{prefix}{os.getpid() % 100000}"
    subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
                   check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run([userdel, name], capture_output=True)


@pytest.fixture(scope="module")
def mallory() -> Iterator[pwd.struct_passwd]:
    with local_account("svcmal") as account:
        yield account


@pytest.fixture(scope="module")
def victim() -> Iterator[pwd.struct_passwd]:
    with local_account("svcvic") as account:
        yield account


def as_user(user: pwd.struct_passwd) -> dict[str, object]:
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def python_for(user: pwd.struct_passwd) -> tuple[str, dict[str, str]]:
    """A Python interpreter ``user`` may run that imports this package (our venv's may sit
    under a private home), and the environment that makes it do so."""
    site = sysconfig.get_paths()["purelib"]
    env = {**user_env(), "PYTHONPATH": f"{ROOT}{os.pathsep}{site}", "HOME": "/tmp"}
    for python in (sys.executable, "/usr/bin/python3"):
        try:
            probe = subprocess.run([python, "-c", "import supervisord_lite.cli"], env=env, capture_output=True, cwd="/tmp",
                                   **as_user(user))  # type: ignore[call-overload]
        except OSError:
            continue
        if probe.returncode == 0:
            return python, env
    pytest.skip(f"no Python interpreter {user.pw_name} can run with this package")


def user_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env.update(extra)
    return env


@dataclass
class Impostor:
    proc: subprocess.Popen[str]
    requests: list[str] = field(default_factory=list)  # what reached it, known once it is gone


@contextmanager
def impostor(user: pwd.struct_passwd, path: Path, manifest: Path) -> Iterator[Impostor]:
    """``user``'s listener on ``path``: bound here, listen() called (so SO_PEERCRED names
    it) and served by a process of ``user``."""
    fabricated = SupervisorSnapshot(
        name="test", manifest=str(manifest), pid=1, started_at=time.time(),
        services=(ServiceSnapshot(name="fabricated", tier="app", port=1, state=ServiceState.READY, pid=1),),
    ).to_dict()
    python, env = python_for(user)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.fspath(path))
    os.chmod(path, 0o666)
    proc = subprocess.Popen([python, "-c", FAKE_LISTENER, str(sock.fileno()), json.dumps(fabricated)],
                            pass_fds=[sock.fileno()], stdout=subprocess.PIPE, text=True, cwd="/", env=env,
                            **as_user(user))  # type: ignore[call-overload]
    sock.close()
    fake = Impostor(proc)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        yield fake
    finally:
        proc.kill()
        output, _ = proc.communicate(timeout=10)
        fake.requests = [line for line in output.splitlines() if line.startswith("request")]


def assert_nothing_started(platform: Platform) -> None:
    assert not (platform.state_dir / "daemon.lock").exists()
    assert platform.our_processes() == []
    assert not platform.records.exists()


# ----------------------------------------------------------------------------- impersonation


@needs_root
def test_a_listener_of_another_uid_is_refused_before_anything_is_sent(platform: Platform, mallory: pwd.struct_passwd) -> None:
    platform.add("api")
    platform.write()
    platform.state_dir.mkdir(mode=0o700)
    sock = paths.socket_path_for(platform.state_dir)
    who = f"uid {mallory.pw_uid} ({mallory.pw_name})"
    with impostor(mallory, sock, platform.manifest) as fake:
        for args in (("up",), ("status",), ("status", "--json"), ("down",), ("reload",), ("restart", "api"), ("shutdown",)):
            result = platform.svc(*args)
            said = result.stdout + result.stderr
            assert result.returncode == 3, (args, said)
            assert f"the control socket {sock} is served by {who}, not by you or root: refusing to trust it" in result.stderr, (args, said)
            assert "Traceback" not in said and "fabricated" not in said and "started the daemon" not in said, (args, said)
        assert_nothing_started(platform)
        # a daemon started directly (as systemd does) will not listen beside it either
        daemon = platform.svc("daemon")
        assert daemon.returncode == 2, daemon.stderr
        assert f"a process of {who} already listens on {sock}" in daemon.stderr and "Traceback" not in daemon.stderr
        assert platform.our_processes() == [] and not platform.records.exists()
    assert fake.requests == []  # not one request reached the impostor

    # with the impostor gone, the real daemon starts and serves
    sock.unlink()
    up = platform.svc("up")
    assert up.returncode == 0 and "started the daemon" in up.stderr, up.stderr
    assert platform.status()["api"]["state"] == "ready"


@pytest.mark.parametrize("place", ["state_dir", "private folder"])
@pytest.mark.parametrize("thing", ["dangling symlink", "folder"])
def test_a_symlink_or_a_folder_at_the_socket_path_is_a_clear_error(tmp_path: Path, place: str, thing: str) -> None:
    root = tmp_path / ("long-" + "x" * 110) if place == "private folder" else tmp_path
    root.mkdir(exist_ok=True)
    platform = Platform(root)
    try:
        platform.add("api")
        platform.write()
        platform.state_dir.mkdir(mode=0o700)
        sock = paths.socket_path_for(platform.state_dir, runtime_dir="")
        assert (sock.parent == platform.state_dir) == (place == "state_dir")
        sock.parent.mkdir(mode=0o700, exist_ok=True)
        if thing == "folder":
            sock.mkdir()
        else:
            sock.symlink_to(tmp_path / "nowhere")
        what = "a folder" if thing == "folder" else f"a symbolic link (to {tmp_path / 'nowhere'})"
        expected = f"the control socket path {sock} is {what}, owned by uid 0 (root), not a socket: refusing to use it; remove it"
        env = user_env()
        for args in (("up",), ("status",), ("daemon",)):  # the CLI, and the daemon itself
            result = subprocess.run([*SVC, args[0], "--manifest", str(platform.manifest)], capture_output=True, text=True,
                                    timeout=60, cwd=root, stdin=subprocess.DEVNULL, env=env)
            assert result.returncode == 2, (args, result.stderr)
            assert expected in result.stderr, (args, result.stderr)
            assert "Traceback" not in result.stdout + result.stderr, (args, result.stderr)
        assert platform.our_processes() == [] and not platform.records.exists()
        assert sock.is_symlink() or sock.is_dir()  # left as it was: never followed, replaced or removed
    finally:
        platform.cleanup()
        if sock.is_symlink():
            sock.unlink()
        elif sock.is_dir():
            sock.rmdir()


def test_the_private_socket_folder_is_0700_and_found_by_the_cli_wherever_the_daemon_put_it(tmp_path: Path) -> None:
    root = tmp_path / ("long-" + "y" * 110)
    root.mkdir()
    platform = Platform(root)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)

    def svc(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SVC, args[0], "--manifest", str(platform.manifest), *args[1:]], capture_output=True,
                              text=True, timeout=60, cwd=root, stdin=subprocess.DEVNULL, env=env)

    def assert_private(folder: Path, sock: Path) -> None:
        seen = os.lstat(folder)
        assert stat.S_ISDIR(seen.st_mode) and stat.S_IMODE(seen.st_mode) == 0o700 and seen.st_uid == os.getuid()
        assert stat.S_ISSOCK(os.lstat(sock).st_mode) and stat.S_IMODE(os.lstat(sock).st_mode) == 0o600

    with_runtime, without = user_env(XDG_RUNTIME_DIR=str(runtime)), user_env()
    try:
        platform.add("api")
        platform.write()
        # a daemon started without $XDG_RUNTIME_DIR (a systemd unit's environment, say): /tmp/svc-UID
        assert svc("up", env=without).returncode == 0
        sock = paths.socket_path_for(platform.state_dir, runtime_dir="")
        assert sock.parent == Path(f"/tmp/svc-{os.getuid()}")
        assert_private(sock.parent, sock)
        # a command run with it (a login shell) still finds that daemon
        status = svc("status", "--json", env=with_runtime)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["pid"] == platform.daemon_pid()
        assert svc("shutdown", env=with_runtime).returncode == 0
        assert not sock.exists()
        # a daemon started with $XDG_RUNTIME_DIR listens in $XDG_RUNTIME_DIR/svc
        up = svc("up", env=with_runtime)
        assert up.returncode == 0 and "started the daemon" in up.stderr, up.stderr
        sock = paths.socket_path_for(platform.state_dir, runtime_dir=str(runtime))
        assert sock.parent == runtime / "svc" and len(os.fsencode(sock)) < 108
        assert_private(sock.parent, sock)
        status = svc("status", "--json", env=with_runtime)
        assert status.returncode == 0 and json.loads(status.stdout)["pid"] == platform.daemon_pid(), status.stderr
    finally:
        svc("shutdown", env=with_runtime)
        platform.cleanup()


@needs_root
@pytest.mark.parametrize("made_as", ["folder", "symlink"])
def test_a_private_socket_folder_another_user_made_first_is_refused(
    mallory: pwd.struct_passwd, victim: pwd.struct_passwd, made_as: str
) -> None:
    """The victim's /tmp/svc-UID, made first by mallory with her listener inside: the
    victim's `svc up`, `svc status` and `svc daemon` refuse it, naming owner and mode."""
    base = Path(tempfile.mkdtemp(prefix="svc-trust-", dir="/tmp"))
    os.chmod(base, 0o755)
    root = base / ("long-" + "z" * 110)
    root.mkdir()
    platform = Platform(root)
    folder = Path(f"/tmp/svc-{victim.pw_uid}")
    hers = base / "hers"
    try:
        platform.add("api")
        platform.write()
        os.chown(root, victim.pw_uid, victim.pw_gid)
        os.chown(platform.manifest, victim.pw_uid, victim.pw_gid)
        shutil.rmtree(folder, ignore_errors=True)
        target = folder if made_as == "folder" else hers
        target.mkdir(mode=0o777)
        os.chmod(target, 0o777)
        os.chown(target, mallory.pw_uid, mallory.pw_gid)
        if made_as == "symlink":
            folder.symlink_to(hers)
            os.lchown(folder, mallory.pw_uid, mallory.pw_gid)
        sock = paths.socket_path_for(platform.state_dir, uid=victim.pw_uid, runtime_dir="")
        assert sock.parent == folder
        python, env = python_for(victim)
        with impostor(mallory, target / sock.name, platform.manifest) as fake:
            for command in ("up", "status", "daemon"):
                result = subprocess.run([python, "-m", "supervisord_lite", command, "--manifest", str(platform.manifest)],
                                        capture_output=True, text=True, timeout=60, cwd=root, stdin=subprocess.DEVNULL,
                                        env=env, **as_user(victim))  # type: ignore[call-overload]
                assert result.returncode == 2, (command, result.stderr)
                if made_as == "folder":
                    assert (f"the control socket folder {folder} is owned by uid {mallory.pw_uid} ({mallory.pw_name}) "
                            f"with mode 0777; it must be owned by uid {victim.pw_uid} ({victim.pw_name}) with mode 0700: "
                            "refusing to use it") in result.stderr, (command, result.stderr)
                else:
                    assert (f"the control socket folder {folder} is a symbolic link (to {hers}), owned by uid "
                            f"{mallory.pw_uid} ({mallory.pw_name}): refusing to follow it") in result.stderr, (command, result.stderr)
                assert "Traceback" not in result.stdout + result.stderr and "fabricated" not in result.stdout
            assert platform.our_processes() == [] and not platform.records.exists()
        assert fake.requests == []
    finally:
        platform.cleanup()
        if folder.is_symlink():
            folder.unlink()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------- bounded clients


DAEMON_FD_LIMIT = 32  # few to spare: the daemon holds 13 of its own and 3 per service (25 with five services)


def start_with_fd_limit(platform: Platform, limit: int) -> psutil.Process:
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    up = subprocess.run([*SVC, "up", "--manifest", str(platform.manifest)], capture_output=True, text=True, timeout=60,
                        cwd=platform.root, stdin=subprocess.DEVNULL, preexec_fn=limited)
    assert up.returncode == 0, up.stderr
    daemon = psutil.Process(platform.daemon_pid())
    assert daemon.rlimit(psutil.RLIMIT_NOFILE) == (limit, limit)
    return daemon


def timed_status(sock: Path) -> float:
    t0 = time.monotonic()
    transport.call(sock, "status", timeout=10)
    return time.monotonic() - t0


@pytest.mark.slow
def test_200_idle_connections_of_its_own_uid_leave_status_answered_within_a_second(platform: Platform) -> None:
    for name in ("api", "web", "worker", "cache", "queue"):
        platform.add(name)
    platform.write()
    daemon = start_with_fd_limit(platform, DAEMON_FD_LIMIT)
    sock = paths.socket_path_for(platform.state_dir)
    idle: list[socket.socket] = []
    try:
        for i in range(200):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(os.fspath(sock))
            if i % 2:
                s.sendall(b'{"op": "sta')  # half a request, then silence
            idle.append(s)
        latencies = [timed_status(sock) for _ in range(5)]
        assert max(latencies) < 1.0, latencies  # the promise (measured: under 0.1 s)
        cli = platform.svc("status", timeout=30)
        assert cli.returncode == 0 and "api" in cli.stdout, cli.stderr
        assert daemon.num_fds() <= DAEMON_FD_LIMIT - 4  # descriptors kept free for everything but idle clients
        api = platform.status()["api"]  # and it still supervises
        os.kill(api["pid"], 9)
        wait_until(lambda: (s := platform.status()["api"])["state"] == "ready" and s["pid"] != api["pid"], timeout=15, what="api back")
    finally:
        for s in idle:
            s.close()
    assert "Traceback" not in (platform.state_dir / "daemon.log").read_text()
    print(f"\n200 idle connections, daemon limited to {DAEMON_FD_LIMIT} fds: status max {max(latencies) * 1000:.0f} ms")


@pytest.mark.slow
def test_busy_connections_over_the_cap_get_a_clear_refusal_and_status_comes_back(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    start_with_fd_limit(platform, DAEMON_FD_LIMIT)
    sock = paths.socket_path_for(platform.state_dir)
    watchers: list[Iterator[dict[str, object]]] = []
    refusal: ControlError | None = None
    try:
        for _ in range(DAEMON_FD_LIMIT):  # never more than the descriptors it has
            stream = transport.request(sock, "watch", {}, timeout=10)
            first = next(stream)
            if first.get("done"):
                with pytest.raises(ControlError) as refused:
                    transport.final_result(first)
                refusal = refused.value
                break
            assert "progress" in first
            watchers.append(stream)
        assert refusal is not None, f"{len(watchers)} watch streams and no refusal"
        assert refusal.code == 1 and "too many control connections from uid 0 (root)" in str(refusal), refusal
        t0 = time.monotonic()
        with pytest.raises(ControlError, match="too many control connections"):
            transport.call(sock, "status", timeout=10)
        assert time.monotonic() - t0 < 1.0  # refused at once, not left waiting
    finally:
        for stream in watchers:
            stream.close()  # type: ignore[attr-defined]
    wait_until(lambda: _answers_status(sock), timeout=10, what="status answered once the watchers left")
    print(f"\nthe cap at {DAEMON_FD_LIMIT} descriptors: {len(watchers)} busy connections, then a refusal")


def _answers_status(sock: Path) -> bool:
    try:
        transport.call(sock, "status", timeout=5)
        return True
    except ControlError:
        return False


@pytest.mark.slow
def test_10000_control_connections_leave_descriptors_threads_and_memory_flat(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    sock = paths.socket_path_for(platform.state_dir)
    daemon = psutil.Process(platform.daemon_pid())
    for _ in range(200):  # warm up: the first requests grow caches once
        transport.call(sock, "status", timeout=10)
    before, threads_before = daemon_usage(platform), daemon.num_threads()

    def client(n: int) -> None:
        for i in range(n):
            transport.call(sock, "status" if i % 2 else "ping", timeout=10)

    t0 = time.monotonic()
    workers = [threading.Thread(target=client, args=(2500,)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t0
    wait_until(lambda: daemon.num_fds() <= before.fds, timeout=10, what=f"the daemon's descriptors back to {before.fds}")
    after, threads_after = daemon_usage(platform), daemon.num_threads()
    assert after.fds <= before.fds, (before, after)  # nothing kept open (one may close meanwhile)
    assert threads_after <= threads_before, (threads_before, threads_after)
    assert after.rss - before.rss < 8 * 2**20, (before, after)
    print(f"\n10,000 connections in {elapsed:.1f} s: {before} -> {after}; threads {threads_before} -> {threads_after}")


# ----------------------------------------------------------------------------- who started it


@pytest.mark.slow
def test_of_20_cold_ups_at_once_exactly_one_says_it_started_the_daemon(platform: Platform) -> None:
    platform.add("api")
    platform.add("worker", port=None)
    platform.write()
    command = [*SVC, "up", "--manifest", str(platform.manifest)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=platform.root,
                              stdin=subprocess.DEVNULL) for _ in range(20)]
    outputs = [p.communicate(timeout=180) for p in procs]
    results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]
    assert all(code == 0 for code, _, _ in results), [err for code, _, err in results if code]
    started = [err for _, _, err in results if "started the daemon" in err]
    joined = [err for _, _, err in results if "joined the daemon another command started" in err]
    assert len(started) == 1, started
    assert len(joined) <= 19 and not any("started the daemon" in err for err in joined)
    daemons = [p for p in psutil.process_iter(["cmdline"])
               if "supervisord_lite.daemon" in (p.info["cmdline"] or []) and str(platform.manifest) in (p.info["cmdline"] or [])]
    wait_until(lambda: len([p for p in daemons if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]) == 1,
               timeout=30, what="the losing daemons to exit")
    assert platform.status()["api"]["state"] == "ready"
    print(f"\n20 cold `svc up`: 1 started the daemon, {len(joined)} joined it, {19 - len(joined)} found it running")
