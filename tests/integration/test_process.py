"""Spawning and stopping real process trees: environment, output, signals, escapes, users."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio
import psutil
import pytest

from supervisord_lite.core.envfiles import parse_env_file
from supervisord_lite.core.model import ServiceSpec
from supervisord_lite.core.systemdenv import SYSTEMD_VARIABLES
from supervisord_lite.host.proctable import find_instance_processes, scan_instances
from supervisord_lite.runtime import environment
from supervisord_lite.runtime.environment import SpawnError, service_environment
from supervisord_lite.runtime.logs import ServiceLog
from supervisord_lite.runtime.service_process import ServiceProcess, adopt
from supervisord_lite.runtime.spawn import MAX_LINE_CHARS, spawn
from supervisord_lite.runtime.termination import kill_instance, stop_orphans
from tests.conftest import FAKES, PYTHON, free_port, free_ports
from tests.integration.harness import gone

pytestmark = pytest.mark.anyio

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "


# -- helpers --------------------------------------------------------------------


def spec_for(name: str, command: list[str], **kw: Any) -> ServiceSpec:
    if "env" in kw:
        kw["env"] = MappingProxyType(dict(kw["env"]))
    return ServiceSpec(name=name, tier="backend", command=tuple(str(c) for c in command), **kw)


def fake(script: str, *args: object) -> list[str]:
    return [PYTHON, str(FAKES / script), *(str(a) for a in args)]


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts by hand (stand-ins for a previous daemon's children)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        p.wait(timeout=5)


@asynccontextmanager
async def running(
    spec: ServiceSpec, instance_id: str, log: ServiceLog, **kw: Any
) -> AsyncIterator[ServiceProcess]:
    """Spawn ``spec``; on the way out SIGKILL its whole tree, even when the test failed."""
    async with anyio.create_task_group() as tg:
        proc = await spawn(spec, instance_id=instance_id, log=log, task_group=tg, **kw)
        try:
            yield proc
        finally:
            with anyio.CancelScope(shield=True):
                await proc.stop(signal.SIGKILL, 2.0)
            tg.cancel_scope.cancel()


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` on the event loop until truthy, failing after ``timeout``."""
    with anyio.fail_after(timeout):
        while True:
            value = predicate()
            if value:
                return value
            await anyio.sleep(0.01)


def line_matching(log: ServiceLog, pattern: str) -> Callable[[], re.Match[str] | None]:
    rx = re.compile(pattern)

    def find() -> re.Match[str] | None:
        for line in log.tail():
            m = rx.search(line)
            if m:
                return m
        return None

    return find


def new_log(tmp_path: Path, name: str = "svc", **kw: Any) -> ServiceLog:
    return ServiceLog(tmp_path / "logs" / f"{name}.log", max_bytes=kw.pop("max_bytes", 0), backups=kw.pop("backups", 0), **kw)


# -- env files (pure) -----------------------------------------------------------


def test_parse_env_file_syntax() -> None:
    text = """
# a comment
PLAIN=value
export EXPORTED=yes
SPACED = around the equals sign
QUOTED="two words # not a comment"
SINGLE='literal \\n stays'
ESCAPES="line\\nbreak \\"quoted\\""
TRAILING=value # a comment
EMPTY=
URL=postgres://u:p@host:5432/db?x=1
"""
    assert parse_env_file(text) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "around the equals sign",
        "QUOTED": "two words # not a comment",
        "SINGLE": "literal \\n stays",
        "ESCAPES": 'line\nbreak "quoted"',
        "TRAILING": "value",
        "EMPTY": "",
        "URL": "postgres://u:p@host:5432/db?x=1",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("JUSTAKEY\n", "line 1: expected KEY=VALUE"),
        ("OK=1\n1BAD=2\n", "line 2: expected KEY=VALUE"),
        ('A="unclosed\n', 'line 1: A: the " quote is never closed'),
        ("A='x' y\n", "line 1: A: unexpected text after the closing quote"),
    ],
)
def test_parse_env_file_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_env_file(text, source="env_file '.env'")


def test_service_environment_layers(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("FROM_FILE=file\nOVERRIDDEN=file\nPORT=1\n")
    spec = spec_for("api", ["x"], port=8001, env_files=(env_file,), env={"OVERRIDDEN": "spec", "SVC_SERVICE": "nope"})
    env = service_environment(spec, instance_id="i-1", extra_env={"EXTRA": "1"}, base={"PATH": "/bin", "FROM_FILE": "base"})
    assert env == {
        "PATH": "/bin",
        "FROM_FILE": "file",
        "OVERRIDDEN": "spec",
        "EXTRA": "1",
        "PORT": "8001",
        "SVC_SERVICE": "api",
        "SVC_INSTANCE": "i-1",
    }
    assert "SVC_INSTANCE" not in service_environment(spec, base={"SVC_INSTANCE": "inherited"})


def test_service_environment_drops_the_daemons_systemd_variables() -> None:
    base = {name: "x" for name in SYSTEMD_VARIABLES} | {"PATH": "/bin"}
    env = service_environment(spec_for("api", ["x"]), base=base)
    assert not set(SYSTEMD_VARIABLES) & set(env), "systemd set these for the daemon's unit, not for its services"
    assert env["PATH"] == "/bin"


# -- spawning ---------------------------------------------------------------------


async def test_spawn_sets_env_cwd_env_file_port_and_a_new_session(tmp_path: Path, instance: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env_file = tmp_path / "api.env"
    env_file.write_text('export DATABASE_URL="postgres://localhost/db"\nSHARED=from-file\n')
    port = free_port()
    spec = spec_for(
        "api",
        fake("print_env.py", "DATABASE_URL", "SHARED", "GREETING", "EXTRA", "PORT", "SVC_SERVICE", "SVC_INSTANCE", "PATH"),
        port=port,
        cwd=work,
        env_files=(env_file,),
        env={"SHARED": "from-spec", "GREETING": "hello world"},
    )
    log = new_log(tmp_path, "api")
    async with running(spec, instance, log, extra_env={"EXTRA": "x"}) as proc:
        assert await proc.wait() == 0
        assert proc.returncode == 0
    report = json.loads(re.sub(STAMP, "", next(line for line in log.tail() if "{" in line)))
    assert report["env"] == {
        "DATABASE_URL": "postgres://localhost/db",
        "SHARED": "from-spec",
        "GREETING": "hello world",
        "EXTRA": "x",
        "PORT": str(port),
        "SVC_SERVICE": "api",
        "SVC_INSTANCE": instance,
        "PATH": os.environ["PATH"],
    }
    assert report["cwd"] == str(work)
    assert report["pid"] == proc.pid == proc.pgid
    assert report["pgid"] == report["sid"] == proc.pid, "the service leads its own session and group"
    assert proc.env["PORT"] == str(port)
    assert abs(proc.create_time - proc.started_at) < 1.0


async def test_a_missing_command_is_a_spawn_error_naming_service_command_and_cause(tmp_path: Path, instance: str) -> None:
    async with anyio.create_task_group() as tg:
        with pytest.raises(SpawnError) as err:
            await spawn(spec_for("api", ["uvicornn-not-installed", "app"]), instance_id=instance, log=new_log(tmp_path), task_group=tg)
    assert str(err.value) == "api: cannot run 'uvicornn-not-installed': No such file or directory (not found on PATH)"


async def test_other_spawn_errors_are_clear(tmp_path: Path, instance: str) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    no_shebang = tmp_path / "noshebang"
    no_shebang.write_bytes(b"\x00\x01binary junk")
    no_shebang.chmod(0o755)
    cases = [
        (spec_for("web", [script]), f"web: cannot run '{script}': Permission denied"),
        (spec_for("web", [no_shebang]), f"web: cannot run '{no_shebang}': Exec format error (a script without a #! line?)"),
        (spec_for("web", ["true"], cwd=tmp_path / "nope"), f"web: working directory '{tmp_path / 'nope'}' (key 'cwd') does not exist"),
        (
            spec_for("web", ["true"], env_files=(tmp_path / "missing.env",)),
            f"web: env_file '{tmp_path / 'missing.env'}' does not exist",
        ),
        (spec_for("web", ["true"], user="no-such-user-xyz"), "web: user 'no-such-user-xyz' (key 'user') does not exist on this machine"),
        (spec_for("web", []), "web: the command (key 'command') is empty"),
    ]
    bad_env = tmp_path / "bad.env"
    bad_env.write_text("GOOD=1\nthis is not an assignment\n")
    cases.append((spec_for("web", ["true"], env_files=(bad_env,)), f"web: env_file '{bad_env}', line 2: expected KEY=VALUE"))
    async with anyio.create_task_group() as tg:
        for spec, message in cases:
            with pytest.raises(SpawnError) as err:
                await spawn(spec, instance_id=instance, log=new_log(tmp_path), task_group=tg)
            assert str(err.value).startswith(message), str(err.value)


def test_a_user_other_than_ours_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a non-root daemon, `user` naming someone else is refused before anything runs."""
    monkeypatch.setattr(environment.os, "geteuid", lambda: 65534 if os.getuid() == 0 else os.getuid())
    other = "root" if os.getuid() != 0 else "daemon"
    with pytest.raises(SpawnError, match=rf"web: cannot run as user '{other}' \(key 'user'\): the daemon runs as .*not root"):
        environment.user_kwargs(spec_for("web", ["true"], user=other))


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
async def test_user_drops_privileges_when_root(tmp_path: Path, instance: str) -> None:
    nobody = __import__("pwd").getpwnam("nobody")
    spec = spec_for("web", ["/usr/bin/python3", FAKES / "print_env.py", "HOME", "USER", "LOGNAME"], user="nobody", cwd=Path("/"))
    log = new_log(tmp_path)
    async with running(spec, instance, log) as proc:
        assert await proc.wait() == 0
    report = json.loads(re.sub(STAMP, "", next(line for line in log.tail() if "{" in line)))
    assert report["uid"] == nobody.pw_uid
    assert report["gid"] == nobody.pw_gid
    assert 0 not in report["groups"], "root's supplementary groups are dropped"
    assert report["env"] == {"HOME": nobody.pw_dir, "USER": "nobody", "LOGNAME": "nobody"}


# -- output -----------------------------------------------------------------------


async def test_output_is_pumped_with_timestamps_long_and_partial_lines(tmp_path: Path, instance: str) -> None:
    log = new_log(tmp_path, "flood", tail_lines=10_000)
    seen: list[str] = []
    long_len = 2 * MAX_LINE_CHARS + 100
    async with running(spec_for("flood", fake("flood.py", 3000, long_len)), instance, log, on_line=seen.append) as proc:
        assert await proc.wait() == 0
    log.close()
    file_lines = (tmp_path / "logs" / "flood.log").read_text(encoding="utf-8").splitlines()
    assert all(re.match(STAMP, line) for line in file_lines)
    bodies = [re.sub(STAMP, "", line, count=1) for line in file_lines]
    assert bodies[:3000] == [f"line {i} héllo" for i in range(3000)], "every line, in order, decoded as UTF-8"
    assert bodies[3000:3003] == ["x" * MAX_LINE_CHARS, "x" * MAX_LINE_CHARS, "x" * 100], "a long line is cut, not lost"
    assert "to stderr" in bodies, "stderr goes to the same log"
    assert bodies[-1] == "partial-end", "a last line without a newline is kept"
    assert seen == bodies, "on_line sees exactly what the file gets, without timestamps"


async def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path, instance: str) -> None:
    log = new_log(tmp_path)
    command = [PYTHON, "-c", "import sys; sys.stdout.buffer.write(b'bad \\xff\\xfe bytes\\nok\\n')"]
    async with running(spec_for("bin", command), instance, log) as proc:
        await proc.wait()
    assert [re.sub(STAMP, "", line) for line in log.tail()] == ["bad \ufffd\ufffd bytes", "ok"]


async def test_a_partial_line_is_logged_while_the_service_keeps_running(tmp_path: Path, instance: str) -> None:
    log = new_log(tmp_path)
    command = [PYTHON, "-c", "import sys, time; sys.stdout.write('Password: '); sys.stdout.flush(); time.sleep(60)"]
    async with running(spec_for("prompt", command), instance, log):
        await eventually(line_matching(log, r"Password: $"), timeout=5)


async def test_on_exit_calls_back_from_the_loop_once_the_child_exits(tmp_path: Path, instance: str) -> None:
    log = new_log(tmp_path)
    command = [PYTHON, "-c", "import time; time.sleep(60)"]
    async with running(spec_for("sleeper", command), instance, log) as proc:
        calls: list[int | None] = []
        cancelled: list[int | None] = []
        unwatch = proc.on_exit(lambda: calls.append(proc.returncode))
        cancel_other = proc.on_exit(lambda: cancelled.append(proc.returncode))
        assert unwatch is not None and cancel_other is not None
        cancel_other()  # a cancelled watch is never called
        await anyio.sleep(0.1)
        assert calls == [], "no call while the child runs"
        os.killpg(proc.pgid, signal.SIGKILL)
        await eventually(lambda: calls, timeout=10, what="the exit callback")
        assert await proc.wait() == -signal.SIGKILL
        unwatch()  # after the call: nothing left to cancel, no error
        late: list[bool] = []
        cancel_late = proc.on_exit(lambda: late.append(True))  # exited and reaped: called soon, no pidfd
        assert cancel_late is not None
        await eventually(lambda: late, timeout=10, what="the call for an exited child")
        assert len(calls) == 1 and cancelled == [], "called once; the cancelled watch never"


async def test_the_exit_callback_may_start_a_task(tmp_path: Path, instance: str) -> None:
    log = new_log(tmp_path)
    async with anyio.create_task_group() as tg, running(spec_for("quick", [PYTHON, "-c", "print('bye')"]), instance, log) as proc:
        ended: list[int] = []

        async def watcher() -> None:
            ended.append(await proc.wait())

        assert proc.on_exit(lambda: tg.start_soon(watcher)) is not None
        await eventually(lambda: ended, timeout=10, what="the watcher started by the exit callback")
        assert ended == [0]
        assert [re.sub(STAMP, "", line) for line in log.tail()] == ["bye"], "its output is logged before wait() returns"


async def test_close_output_logs_what_was_read_and_closes_the_pipe(tmp_path: Path, instance: str) -> None:
    log = new_log(tmp_path)
    command = [PYTHON, "-c", "import sys, time; print('one', flush=True); sys.stdout.write('half'); sys.stdout.flush(); time.sleep(60)"]
    async with running(spec_for("held", command), instance, log) as proc:
        await eventually(line_matching(log, r"one$"), timeout=10)
        assert proc.output_open
        pipe_fds = {entry.name for entry in Path("/proc/self/fd").iterdir()}
        proc.close_output()  # the runner is gone while the service still runs
        assert not proc.output_open
        assert [re.sub(STAMP, "", line) for line in log.tail()] == ["one", "half"], "the partial line is not lost"
        assert len({entry.name for entry in Path("/proc/self/fd").iterdir()}) == len(pipe_fds) - 1, "the pipe is closed"
        proc.close_output()  # again: nothing happens
        with anyio.fail_after(10):
            os.killpg(proc.pgid, signal.SIGKILL)
            await proc.wait()  # does not wait for a pump that is gone


async def test_output_rotates_by_size_with_backups(tmp_path: Path, instance: str) -> None:
    log = new_log(tmp_path, "flood", max_bytes=20_000, backups=2)
    async with running(spec_for("flood", fake("flood.py", 5000)), instance, log) as proc:
        await proc.wait()
    log.close()
    names = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert names == ["flood.log", "flood.log.1", "flood.log.2"]
    sizes = [(tmp_path / "logs" / n).stat().st_size for n in names]
    assert all(0 < s <= 20_000 for s in sizes), sizes
    bodies = []
    for name in ["flood.log.2", "flood.log.1", "flood.log"]:
        bodies += [re.sub(STAMP, "", line) for line in (tmp_path / "logs" / name).read_text().splitlines()]
    assert bodies[-2:] == ["to stderr", "partial-end"]
    numbers = [int(b.split()[1]) for b in bodies[:-2]]
    assert numbers == list(range(numbers[0], 5000)), "oldest file to newest: consecutive lines, none lost between files"
    assert numbers[0] > 0, "the oldest output fell off"


# -- stopping ---------------------------------------------------------------------


async def test_stop_with_a_cooperative_service_returns_its_signal(tmp_path: Path, instance: str) -> None:
    log = new_log(tmp_path)
    port = free_port()
    async with running(spec_for("web", fake("listen_port.py", port)), instance, log) as proc:
        await eventually(line_matching(log, r"listening"))
        start = time.monotonic()
        rc = await proc.stop(signal.SIGTERM, timeout=5.0)
        assert rc == -signal.SIGTERM
        assert time.monotonic() - start < 2.0, "no waiting for the timeout when everything exits"
        assert gone(proc.pid)
        assert proc.returncode == -signal.SIGTERM


async def test_stop_kills_a_sigterm_ignoring_tree_after_the_timeout(tmp_path: Path, instance: str) -> None:
    log = new_log(tmp_path)
    async with running(spec_for("stubborn", fake("ignore_term_tree.py")), instance, log) as proc:
        m = await eventually(line_matching(log, r"pids (\d+) (\d+)"))
        await eventually(line_matching(log, r"grandchild \d+"))
        parent, grandchild = int(m.group(1)), int(m.group(2))
        assert parent == proc.pid
        assert set(proc.tree_pids()) == {parent, grandchild}
        start = time.monotonic()
        rc = await proc.stop(signal.SIGTERM, timeout=0.5)
        elapsed = time.monotonic() - start
        assert rc == -signal.SIGKILL
        assert 0.5 <= elapsed < 0.5 + 2.0, elapsed
        assert gone(parent) and gone(grandchild)
        assert proc.tree_pids() == []


async def test_a_double_forked_daemon_is_found_by_its_instance_and_killed(tmp_path: Path, instance: str) -> None:
    log = new_log(tmp_path)
    pid_file = tmp_path / "daemon.pid"
    async with running(spec_for("forker", fake("double_fork.py", pid_file)), instance, log) as proc:
        m = await eventually(line_matching(log, r"daemonized (\d+)"))
        daemon_pid = int(m.group(1))
        assert os.getsid(daemon_pid) != proc.pgid, "the daemon left the service's session"
        assert psutil.Process(daemon_pid).ppid() != proc.pid, "and is no longer its descendant"
        assert daemon_pid in [p.pid for p in find_instance_processes(instance)]
        assert daemon_pid in [p.pid for p in scan_instances(instance)[instance]]
        assert daemon_pid in proc.tree_pids()
        rc = await proc.stop(signal.SIGTERM, timeout=0.5)  # the daemon ignores SIGTERM
        assert rc == -signal.SIGTERM
        assert gone(daemon_pid)
        assert find_instance_processes(instance) == []


async def test_stop_after_exit_still_sweeps_an_escaped_daemon(tmp_path: Path, instance: str) -> None:
    log = new_log(tmp_path)
    pid_file = tmp_path / "daemon.pid"
    async with running(spec_for("forker", fake("double_fork.py", pid_file, "--exit")), instance, log) as proc:
        assert await proc.wait() == 0
        daemon_pid = int(pid_file.read_text())
        assert not gone(daemon_pid), "the daemon outlived its parent"
        assert await proc.stop(signal.SIGTERM, timeout=0.3) == 0, "the main process's own exit code"
        assert gone(daemon_pid)
        start = time.monotonic()
        assert await proc.stop(signal.SIGTERM, timeout=5.0) == 0, "a second stop is harmless"
        assert time.monotonic() - start < 1.0


async def test_concurrent_stops_of_many_services(tmp_path: Path, instance: str) -> None:
    """Ten services stopped at once share process-table reads and all end."""
    log = new_log(tmp_path, tail_lines=1000)
    ports = free_ports(10)  # distinct: ten separate free_port() calls may hand out one port twice
    async with anyio.create_task_group() as tg:
        procs = [
            await spawn(spec_for(f"s{i}", fake("listen_port.py", p)), instance_id=instance, log=log, task_group=tg)
            for i, p in enumerate(ports)
        ]
        try:
            await eventually(lambda: sum("listening" in line for line in log.tail()) == 10)
            results: list[int] = []

            async def stop(p: ServiceProcess) -> None:
                results.append(await p.stop(signal.SIGTERM, 5.0))

            start = time.monotonic()
            async with anyio.create_task_group() as stoppers:
                for p in procs:
                    stoppers.start_soon(stop, p)
            assert results == [-signal.SIGTERM] * 10
            assert time.monotonic() - start < 3.0
            assert all(gone(p.pid) for p in procs)
        finally:
            with anyio.CancelScope(shield=True):
                for p in procs:
                    await p.stop(signal.SIGKILL, 1.0)


async def test_send_signal_reaches_the_group(tmp_path: Path, instance: str) -> None:
    log = new_log(tmp_path)
    async with running(spec_for("web", fake("listen_port.py", free_port())), instance, log) as proc:
        await eventually(line_matching(log, "listening"))
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(5):
            assert await proc.wait() == -signal.SIGTERM


async def test_begin_stop_signals_the_group_once_and_the_timeout_counts_from_it(tmp_path: Path, instance: str) -> None:
    """What a `down` does to every service of a tier before stopping each: the stop that
    follows sends no second signal, and kills only once the timeout has passed since the first."""
    log = new_log(tmp_path)
    record = tmp_path / "signals.txt"
    async with running(spec_for("rec", fake("record_signals.py", record)), instance, log) as proc:
        await eventually(line_matching(log, "recording"))
        begun = time.monotonic()
        proc.begin_stop(signal.SIGHUP)  # recorded and ignored by the main process and its child
        await eventually(lambda: record.exists() and len(record.read_text().splitlines()) == 2, what="both to note SIGHUP")
        rc = await proc.stop(signal.SIGHUP, timeout=1.0)
        assert rc == -signal.SIGKILL
        assert time.monotonic() - begun >= 1.0, "killed before stop_timeout had passed"
        lines = sorted(line.split()[0] + " " + line.split()[2] for line in record.read_text().splitlines())
        assert lines == ["child SIGHUP", "main SIGHUP"], "one SIGHUP each: the stop did not send it again"
        assert gone(proc.pid) and proc.tree_pids() == []


# -- survivors of a previous daemon -------------------------------------------------


def start_orphan(started: list[subprocess.Popen[bytes]], instance_id: str, *command: str) -> psutil.Process:
    """Start a process the way a previous daemon would have (own session, marker set)."""
    env = {**os.environ, "SVC_INSTANCE": instance_id}
    p = subprocess.Popen(list(command), env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    started.append(p)
    return psutil.Process(p.pid)


async def test_kill_instance_stops_survivors_and_leaves_others_alone(
    instance: str, started: list[subprocess.Popen[bytes]]
) -> None:
    survivor = start_orphan(started, instance, *fake("ignore_term_tree.py"))
    bystander = start_orphan(started, "someone-else", PYTHON, "-c", "import time; time.sleep(60)")
    await eventually(lambda: len(find_instance_processes(instance)) == 2, what="survivor and its grandchild")
    tree = {p.pid for p in find_instance_processes(instance)}
    # a stale hint: the bystander's pid with a wrong start time must not be touched
    hints = [(survivor.pid, survivor.create_time()), (bystander.pid, bystander.create_time() - 100)]
    start = time.monotonic()
    stopped = await kill_instance(instance, sig=signal.SIGTERM, timeout=0.3, pids_hint=hints)
    assert set(stopped) == tree
    assert time.monotonic() - start < 0.3 + 5.0  # hang bound: the 0.3 s timeout, then SIGKILL (measured about 0.35 s)
    assert all(gone(pid) for pid in tree)
    assert bystander.is_running() and bystander.status() != psutil.STATUS_ZOMBIE


async def test_stop_orphans_with_a_state_file_record(instance: str, started: list[subprocess.Popen[bytes]]) -> None:
    survivor = start_orphan(started, instance, *fake("listen_port.py", free_port()))
    stopped = await stop_orphans(instance_id=instance, pid=survivor.pid, create_time=survivor.create_time(), timeout=5.0)
    assert stopped == [survivor.pid]
    assert gone(survivor.pid)
    assert await stop_orphans(instance_id="", pid=None, create_time=None) == [], "an empty record matches nothing"


async def test_adopt_watches_and_stops_a_survivor(instance: str, started: list[subprocess.Popen[bytes]]) -> None:
    survivor = start_orphan(started, instance, *fake("ignore_term_tree.py"))
    await eventually(lambda: len(find_instance_processes(instance)) == 2)
    assert adopt(survivor.pid, survivor.create_time() - 50, instance) is None, "a pid with another start time is not ours"
    proc = adopt(survivor.pid, survivor.create_time(), instance, name="stubborn")
    assert proc is not None and proc.adopted and proc.returncode is None
    assert len(proc.tree_pids()) == 2
    rc = await proc.stop(signal.SIGTERM, timeout=0.3)
    assert rc == 255  # ADOPTED_EXIT_UNKNOWN: not our child, its exit status is lost
    assert find_instance_processes(instance) == []


async def test_adopted_wait_notices_the_exit(instance: str, started: list[subprocess.Popen[bytes]]) -> None:
    survivor = start_orphan(started, instance, *fake("listen_port.py", free_port()))
    proc = adopt(survivor.pid, survivor.create_time(), instance)
    assert proc is not None
    async with anyio.create_task_group() as tg:
        result: list[int] = []

        async def waiter() -> None:
            result.append(await proc.wait())

        tg.start_soon(waiter)
        os.kill(survivor.pid, signal.SIGTERM)  # a process this test started
        with anyio.fail_after(5):
            while not result:
                await anyio.sleep(0.01)
    assert result == [255]


def test_find_instance_processes_ignores_an_empty_id() -> None:
    assert find_instance_processes("") == []


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("process trees are tested on Linux", allow_module_level=True)
