"""One service's process tree: spawn it, pump its output, stop all of it.

A service runs in its own session (``start_new_session=True``), so its pid is also
its process-group id and ``killpg`` reaches every process that stayed in the
group. Every process also inherits ``SVC_INSTANCE=<instance id>`` in its
environment: that marker finds descendants that left the group (double-forked,
``setsid`` daemons) and, after a daemon crash, the survivors of a previous daemon.

Signals only ever go to processes we can vouch for: our own unreaped child, its
process group while that group provably is ours, and processes whose identity
(pid plus start time) was checked against the kernel's process table just before.
A recorded pid whose start time no longer matches belongs to someone else now.

Reading the process table is one pass over ``/proc`` shared by every caller that
asks at the same moment (``snapshot_processes``), so stopping 200 services at once
costs a few table reads, not 200.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import functools
import math
import os
import pwd
import signal
import subprocess
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from pathlib import Path

import anyio
import anyio.abc
import psutil

from supervisord_lite.host.proctable import (
    CTIME_TOLERANCE,
    ProcEntry,
    ProcTable,
    find_instance_processes,
    read_proc_table,
    scan_instances,
    verified,
)
from supervisord_lite.runtime.logs import ServiceLog, get_logger
from supervisord_lite.core.model import ServiceSpec

__all__ = [
    "ADOPTED_EXIT_UNKNOWN",
    "ProcEntry",
    "ProcTable",
    "ServiceProcess",
    "SpawnError",
    "adopt",
    "find_instance_processes",
    "kill_instance",
    "load_env_file",
    "parse_env_file",
    "read_proc_table",
    "scan_instances",
    "service_environment",
    "snapshot_processes",
    "spawn",
    "stop_orphans",
]

MAX_LINE_CHARS = 16 * 1024  # a longer line without a newline is cut into pieces of this size
PARTIAL_LINE_FLUSH = 0.5  # seconds a partial line (no newline yet) waits before it is logged anyway
OUTPUT_DRAIN = 0.2  # after the main process exits, how long wait() lets the pump finish
KILL_GRACE = 5.0  # after SIGKILL, how long to wait for the kernel to remove the processes
KILL_ROUNDS = 4  # SIGKILL sweeps: processes forked during the stop get caught by a later round
ADOPTED_EXIT_UNKNOWN = 255  # returncode of an adopted process: not our child, its status is lost

_log = get_logger(component="process")


class SpawnError(Exception):
    """The service could not be started; the message says why, naming service and cause."""


# -- environment ---------------------------------------------------------------


def parse_env_file(text: str, source: str = "env file") -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines: ``#`` comments, blank lines, ``export KEY=...``,
    single quotes (literal), double quotes (``\\n``, ``\\t``, ``\\"``, ``\\\\`` escapes),
    and `` # comment`` after an unquoted value. No ``$VAR`` expansion.

    :raises ValueError: naming ``source`` and the line number of a malformed line
    """
    result: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or not (key.replace("_", "a").isalnum() and not key[0].isdigit()):
            raise ValueError(f"{source}, line {lineno}: expected KEY=VALUE, got {raw.strip()!r}")
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = _closing_quote(value, quote)
            if end < 0:
                raise ValueError(f"{source}, line {lineno}: {key}: the {quote} quote is never closed")
            body = value[1:end]
            rest = value[end + 1 :].strip()
            if rest and not rest.startswith("#"):
                raise ValueError(f"{source}, line {lineno}: {key}: unexpected text after the closing quote: {rest!r}")
            if quote == '"':
                body = _unescape(body)
            value = body
        else:
            hash_at = value.find(" #")
            if hash_at >= 0:
                value = value[:hash_at].rstrip()
        result[key] = value
    return result


def _closing_quote(value: str, quote: str) -> int:
    i = 1
    while i < len(value):
        if value[i] == "\\" and quote == '"':
            i += 2
            continue
        if value[i] == quote:
            return i
        i += 1
    return -1


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def _unescape(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body) and body[i + 1] in _ESCAPES:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def load_env_file(path: Path, service: str) -> dict[str, str]:
    """Read ``service``'s env_file; every problem becomes a SpawnError naming file and service."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpawnError(f"{service}: env_file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise SpawnError(f"{service}: cannot read env_file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SpawnError(f"{service}: env_file {str(path)!r} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        return parse_env_file(text, source=f"env_file {str(path)!r}")
    except ValueError as exc:
        raise SpawnError(f"{service}: {exc}") from None


_SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def service_environment(
    spec: ServiceSpec,
    *,
    instance_id: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a service (or its exec probes) runs with.

    Layers, later wins: ``base`` (default: the daemon's os.environ), HOME/USER/LOGNAME
    of ``spec.user``, the env_file, ``spec.env``, ``extra_env``, then PORT,
    SVC_SERVICE and SVC_INSTANCE (when ``instance_id`` is given), which nothing overrides.
    """
    env = dict(os.environ if base is None else base)
    for name in _SYSTEMD_VARIABLES:  # the daemon's unit's, not the service's to use
        env.pop(name, None)
    if spec.user:
        pw = _lookup_user(spec)
        env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    if spec.env_file is not None:
        env.update(load_env_file(spec.env_file, spec.name))
    env.update(spec.env)
    if extra_env:
        env.update(extra_env)
    if spec.port is not None:
        env["PORT"] = str(spec.port)
    env["SVC_SERVICE"] = spec.name
    if instance_id is not None:
        env["SVC_INSTANCE"] = instance_id
    else:
        env.pop("SVC_INSTANCE", None)
    return env


def _lookup_user(spec: ServiceSpec) -> pwd.struct_passwd:
    assert spec.user is not None
    try:
        return pwd.getpwnam(spec.user)
    except KeyError:
        if spec.user.isdigit():
            with contextlib.suppress(KeyError):
                return pwd.getpwuid(int(spec.user))
        raise SpawnError(f"{spec.name}: user {spec.user!r} (key 'user') does not exist on this machine") from None


def _user_kwargs(spec: ServiceSpec) -> dict[str, object]:
    """open_process arguments that drop privileges to ``spec.user``."""
    if not spec.user:
        return {}
    pw = _lookup_user(spec)
    euid = os.geteuid()
    if euid == 0:
        groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": groups}
    if pw.pw_uid == euid:
        return {}
    me = pwd.getpwuid(euid).pw_name if euid >= 0 else str(euid)
    raise SpawnError(
        f"{spec.name}: cannot run as user {pw.pw_name!r} (key 'user'): the daemon runs as {me!r}, not root; "
        f"run the daemon as root or remove 'user'"
    )


class _Batch:
    __slots__ = ("done", "table")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.table = ProcTable()


_pending_batch: _Batch | None = None


async def snapshot_processes() -> ProcTable:
    """A process table read after this call began; concurrent callers share one read."""
    global _pending_batch
    batch = _pending_batch
    if batch is not None:
        await batch.done.wait()
        return batch.table
    batch = _pending_batch = _Batch()
    try:
        await anyio.sleep(0)  # let every task that asks in this same moment join the batch
    finally:
        _pending_batch = None
        try:
            batch.table = read_proc_table()
        finally:
            batch.done.set()
    return batch.table


def _is_gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _signal(proc: psutil.Process, sig: int) -> bool:
    """Signal ``proc`` if it is still the process we verified (psutil checks pid reuse)."""
    if proc.pid in (0, 1, os.getpid()):
        return False
    try:
        proc.send_signal(sig)
        return True
    except psutil.Error:
        return False


async def _wait_gone(procs: Iterable[psutil.Process]) -> None:
    """Return once every process has exited (zombies count as gone). No deadline: wrap it."""
    pending = [p for p in procs if not _is_gone(p)]
    if not pending:
        return
    async with anyio.create_task_group() as tg:
        for p in pending:
            tg.start_soon(_wait_one_gone, p)


async def _wait_one_gone(proc: psutil.Process) -> None:
    fd = -1
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(proc.pid)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return
    if fd >= 0:
        try:
            if _is_gone(proc):  # the pid may have been reused before pidfd_open; the check after is what counts
                return
            await anyio.wait_readable(fd)  # a pidfd turns readable when the process exits
            return
        finally:
            os.close(fd)
    delay = 0.005
    while not _is_gone(proc):
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def kill_instance(
    instance_id: str,
    *,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 10.0,
    pids_hint: Iterable[tuple[int, float]] = (),
) -> list[int]:
    """Stop every process of a service instance that is not our child (a previous daemon's).

    Finds them by ``SVC_INSTANCE`` and by ``pids_hint`` ((pid, create_time) pairs from a
    state file, checked against the kernel so a reused pid is never touched), plus their
    process groups and descendants; sends ``sig``, polls until they are gone, SIGKILLs
    what is left after ``timeout``. Returns the pids it found.
    """
    hints = list(pids_hint)
    table = await snapshot_processes()
    owner = _Tree(instance_id=instance_id, create_time=min((c for _, c in hints), default=0.0) - 1.0)
    for pid, ctime in hints:
        entry = table.get(pid)
        if entry is None or entry.zombie or abs(entry.create_time - ctime) > CTIME_TOLERANCE:
            continue  # gone, or the pid now belongs to another process
        proc = verified(entry)
        if proc is not None:
            owner.known[pid] = proc
            if entry.pgid == pid:
                owner.groups.add(pid)
    await owner.terminate(sig, timeout, table)
    return sorted(owner.seen)


async def stop_orphans(
    *,
    instance_id: str,
    pid: int | None = None,
    create_time: float | None = None,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 10.0,
) -> list[int]:
    """``kill_instance`` for one state-file record (pid and create_time may be missing)."""
    hints = [(int(pid), float(create_time))] if pid and create_time else []
    return await kill_instance(instance_id, sig=sig, timeout=timeout, pids_hint=hints)


# -- the tree of one service ---------------------------------------------------------


class _Tree:
    """Who belongs to one service: its group(s), descendants, and SVC_INSTANCE carriers."""

    def __init__(self, instance_id: str, create_time: float, main_pid: int | None = None) -> None:
        self.instance_id = instance_id
        self.create_time = create_time
        self.main_pid = main_pid  # excluded from collect(): the owner waits for it itself
        self.groups: set[int] = set()  # pgids known to be ours
        self.known: dict[int, psutil.Process] = {}
        self.seen: set[int] = set()
        self.main_alive: Callable[[], bool] = lambda: False

    def group_is_ours(self, pgid: int, table: ProcTable) -> bool:
        """Is ``pgid`` still the group we started? Its number cannot be reused while the
        group has members, so it is ours when its leader is gone, or when the process
        holding the leader's pid is the very process we know (same start time)."""
        leader = table.get(pgid)
        if leader is None:
            return True
        if pgid == self.main_pid:
            return abs(leader.create_time - self.create_time) <= CTIME_TOLERANCE
        known = self.known.get(pgid)
        return known is not None and abs(known.create_time() - leader.create_time) <= CTIME_TOLERANCE

    def collect(self, table: ProcTable) -> dict[int, psutil.Process]:
        """Members alive in ``table``, verified against pid reuse (main excluded)."""
        me = os.getpid()
        member_pids: set[int] = set()
        groups = {g for g in self.groups if self.group_is_ours(g, table)}
        children, by_pgid = table.index()
        for g in groups:
            member_pids.update(by_pgid.get(g, ()))
        if self.instance_id:  # only processes started after the service can be its own
            member_pids.update(p for p in table.instance_members(self.instance_id, self.create_time - 1.0) if p != me)
        for pid, proc in self.known.items():
            entry = table.get(pid)
            if entry is not None and abs(entry.create_time - proc.create_time()) <= CTIME_TOLERANCE:
                member_pids.add(pid)
        roots = set(member_pids)
        if self.main_pid is not None and self.main_alive():
            roots.add(self.main_pid)
        stack = list(roots)
        while stack:  # descendants, even those that called setsid and cleared their environment
            for child in children.get(stack.pop(), ()):
                if child not in member_pids:
                    member_pids.add(child)
                    stack.append(child)
        result: dict[int, psutil.Process] = {}
        for pid in member_pids:
            entry = table.get(pid)
            if pid in (0, 1, me, self.main_pid) or entry is None or entry.zombie:
                continue
            proc = self.known.get(pid)
            if proc is None or abs(proc.create_time() - entry.create_time) > CTIME_TOLERANCE:
                proc = verified(entry)
            if proc is not None:
                result[pid] = proc
        self.known.update(result)
        self.seen.update(result)
        return result

    def signal_groups(self, sig: int, table: ProcTable) -> None:
        for pgid in list(self.groups):
            if self.group_is_ours(pgid, table):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)

    async def terminate(
        self,
        sig: int,
        timeout: float,
        table: ProcTable | None = None,
        main_wait: Callable[[], Awaitable[object]] | None = None,
    ) -> bool:
        """``sig`` to everything, up to ``timeout`` for all to exit, then SIGKILL rounds.
        Returns True when everything is gone.

        A cooperative service costs two process-table reads: one to find who to signal,
        one to confirm nobody is left."""
        early = self.main_pid in self.groups and self.main_alive()
        if early:  # our live main still holds its pgid: signal at once, look around after
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.main_pid, sig)  # type: ignore[arg-type]
        table = await snapshot_processes() if table is None else table
        members = self.collect(table)
        if not early:
            self.signal_groups(sig, table)
        for pid, proc in members.items():
            if table[pid].pgid not in self.groups:  # group members already got it via killpg
                _signal(proc, sig)
        signalled = set(members)
        deadline = anyio.current_time() + max(0.0, timeout)
        killing = 0
        for _ in range(64):  # bounded even against a fork bomb
            grace = deadline - anyio.current_time() if not killing else KILL_GRACE
            with anyio.move_on_after(max(0.0, grace)):
                if main_wait is not None and self.main_alive():
                    await main_wait()
                await _wait_gone(members.values())
            table = await snapshot_processes()
            members = self.collect(table)
            main_left = main_wait is not None and self.main_alive()
            if not members and not main_left:
                return True
            if not killing and anyio.current_time() < deadline:
                for pid, proc in members.items():  # forked after the signal: they never got it
                    if pid not in signalled:
                        _signal(proc, sig)
                signalled.update(members)
                continue
            if killing >= KILL_ROUNDS:
                break
            killing += 1
            self.signal_groups(signal.SIGKILL, table)
            for proc in members.values():
                _signal(proc, signal.SIGKILL)
            main_entry = table.get(self.main_pid) if main_left and self.main_pid is not None else None
            main_proc = verified(main_entry) if main_entry is not None else None
            if main_proc is not None:  # in case it moved out of its own group
                _signal(main_proc, signal.SIGKILL)
        _log.warning("processes survived SIGKILL", instance=self.instance_id, pids=sorted(members))
        return False


def _pgid_of(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except OSError:
        return None


# -- spawning ---------------------------------------------------------------------


class ServiceProcess:
    """A running service: our child (from ``spawn``) or a survivor we adopted (``adopt``).

    ``pid`` is also the process-group id (the service is a session leader).
    """

    def __init__(
        self,
        *,
        name: str,
        instance_id: str,
        pid: int,
        pgid: int,
        create_time: float,
        started_at: float,
        process: anyio.abc.Process | None = None,
        log: ServiceLog | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.instance_id = instance_id
        self.pid = pid
        self.pgid = pgid
        self.create_time = create_time
        self.started_at = started_at
        self.log = log
        self._process = process
        self._adopted_rc: int | None = None
        self._output_closed = anyio.Event()
        if process is None:
            self._output_closed.set()  # an adopted process's output went to the old daemon
        self._stop_lock = anyio.Lock()
        # kept only for exec probes, which run with the service's environment; a whole
        # copy of the environment per service adds up with hundreds of them
        self.env: dict[str, str] = dict(env or {})
        self._tree = _Tree(instance_id=instance_id, create_time=create_time, main_pid=pid)
        self._tree.groups.add(pgid)
        self._tree.main_alive = lambda: self.returncode is None

    def __repr__(self) -> str:
        return f"<ServiceProcess {self.name} pid={self.pid} rc={self.returncode}>"

    @property
    def adopted(self) -> bool:
        return self._process is None

    @property
    def returncode(self) -> int | None:
        """None while running; negative: killed by that signal (like subprocess)."""
        if self._process is not None:
            return self._process.returncode
        if self._adopted_rc is None and _is_gone_pid(self.pid, self.create_time):
            self._adopted_rc = ADOPTED_EXIT_UNKNOWN
        return self._adopted_rc

    async def wait(self) -> int:
        """Wait for the main process to exit; returns its returncode (see ``returncode``).

        Output already written by the process is in the log when this returns (the
        pump gets up to OUTPUT_DRAIN seconds to finish, in case a descendant still
        holds the pipe open)."""
        if self._process is not None:
            rc = await self._process.wait()
        else:
            await self._wait_adopted()
            rc = ADOPTED_EXIT_UNKNOWN
        with anyio.move_on_after(OUTPUT_DRAIN):
            await self._output_closed.wait()
        return rc

    async def _wait_adopted(self) -> None:
        proc = verified(ProcEntry(self.pid, 0, self.pgid, self.create_time, False))
        if proc is not None:
            await _wait_one_gone(proc)
        self._adopted_rc = ADOPTED_EXIT_UNKNOWN

    async def _main_wait(self) -> None:
        await self.wait()

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the service's process group (while it is provably ours)."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)
            return
        for proc in self._tree.collect(read_proc_table()).values():
            if _pgid_of(proc) == self.pgid:
                _signal(proc, sig)

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Stop the whole tree and return the main process's returncode.

        ``sig`` goes to the process group and to every descendant or SVC_INSTANCE carrier
        that left it; after ``timeout`` seconds whatever is still alive (main, group,
        descendants, escaped daemons) gets SIGKILL. Safe to call again or after the process
        exited: stragglers are still swept.
        """
        async with self._stop_lock:
            ok = await self._tree.terminate(sig, timeout, main_wait=self._main_wait)
            if not ok:
                _log.warning("service processes could not be killed", service=self.name, pid=self.pid)
            rc = self.returncode
            return -signal.SIGKILL if rc is None else rc

    def tree_pids(self, table: ProcTable | None = None) -> list[int]:
        """The live pids of the service: main first, then group, descendants and escaped ones.

        Pass a ``table`` (``read_proc_table()``) to share one read among many services."""
        members = self._tree.collect(read_proc_table() if table is None else table)
        head = [self.pid] if self.returncode is None else []
        return head + sorted(members)


def _is_gone_pid(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CTIME_TOLERANCE:
            return True
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def adopt(pid: int, create_time: float, instance_id: str, name: str = "", log: ServiceLog | None = None) -> ServiceProcess | None:
    """Take over a survivor of a previous daemon, or None when ``pid`` is no longer that process.

    Its output cannot be recovered, ``wait()`` works by watching the pid, and its exit
    status is unknown (``ADOPTED_EXIT_UNKNOWN``)."""
    if _is_gone_pid(pid, create_time):
        return None
    try:
        pgid = os.getpgid(pid)
    except OSError:
        return None
    return ServiceProcess(name=name, instance_id=instance_id, pid=pid, pgid=pgid, create_time=create_time, started_at=create_time, log=log)


async def spawn(
    spec: ServiceSpec,
    *,
    instance_id: str,
    log: ServiceLog,
    task_group: anyio.abc.TaskGroup,
    on_line: Callable[[str], None] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> ServiceProcess:
    """Start ``spec``'s command in a new session with its environment, cwd and user.

    stdout and stderr go through one pipe into ``log`` (and ``on_line``, called with each
    line without timestamp), pumped by a task started in ``task_group``.

    :raises SpawnError: the command, cwd, env_file or user is unusable; the message
        names the service, the command and the OS error
    """
    name = spec.name
    if not spec.command:
        raise SpawnError(f"{name}: the command (key 'command') is empty")
    argv = list(spec.command)
    cwd = Path(spec.cwd)
    if not cwd.is_dir():
        what = "is not a directory" if cwd.exists() else "does not exist"
        raise SpawnError(f"{name}: working directory {str(cwd)!r} (key 'cwd') {what}")
    env = service_environment(spec, instance_id=instance_id, extra_env=extra_env)
    user_kwargs = _user_kwargs(spec)
    try:
        process = await _open_process(argv, cwd=cwd, env=env, user_kwargs=user_kwargs)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.filename is not None and os.fspath(exc.filename) == os.fspath(cwd):
            raise SpawnError(f"{name}: cannot enter working directory {str(cwd)!r} (key 'cwd'): {reason}") from None
        hint = ""
        if exc.errno == errno.ENOENT and "/" not in argv[0]:
            hint = " (not found on PATH)"
        elif exc.errno == errno.ENOENT and (cwd / argv[0]).is_file():
            hint = " (the file exists: is the interpreter on its #! line missing?)"
        elif exc.errno == errno.ENOEXEC:
            hint = " (a script without a #! line?)"
        elif exc.errno == errno.EPERM and user_kwargs:
            hint = f" (switching to user {spec.user!r})"
        raise SpawnError(f"{name}: cannot run {argv[0]!r}: {reason}{hint}") from None
    started_at = time.time()
    try:
        create_time = psutil.Process(process.pid).create_time()
    except psutil.Error:
        create_time = started_at
    svc = ServiceProcess(
        name=name,
        instance_id=instance_id,
        pid=process.pid,
        pgid=process.pid,
        create_time=create_time,
        started_at=started_at,
        process=process,
        log=log,
        env=env,
    )
    assert process.stdout is not None
    task_group.start_soon(_pump, process, log, on_line, svc._output_closed, name=f"pump {name}")
    return svc


class _PipeReader:
    """The read end of a child's output pipe, read without blocking the event loop."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            if self.fd < 0:
                raise anyio.ClosedResourceError
            try:
                data = os.read(self.fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self.fd)
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def aclose(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            anyio.notify_closing(fd)
            os.close(fd)


class _SpawnedProcess:
    """A child started by ``subprocess.Popen`` in a worker thread, awaited through a pidfd.

    Why not ``anyio.open_process``: starting a program blocks the caller until the
    child has exec'd, a few milliseconds per Python service under load, and doing
    that on the event loop for 200 services at once stalls every probe and every
    readiness check behind it. ``fork_exec`` releases the GIL, so from a thread the
    loop keeps running; and a pidfd (Linux 5.3+) makes the exit an ordinary readable
    file descriptor, with no watcher thread per child.
    """

    def __init__(self, popen: subprocess.Popen[bytes], stdout_fd: int) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdout = _PipeReader(stdout_fd)
        self._transport = None

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        while self._popen.returncode is None:
            try:
                pidfd = os.pidfd_open(self.pid)
            except (AttributeError, OSError):  # no pidfd: poll
                if self._popen.poll() is None:
                    await anyio.sleep(0.05)
                continue
            try:
                await anyio.wait_readable(pidfd)
            finally:
                anyio.notify_closing(pidfd)
                os.close(pidfd)
            self._popen.poll()
        return self._popen.returncode

    def send_signal(self, sig: int) -> None:
        self._popen.send_signal(sig)


_SPAWN_LIMITERS: weakref.WeakKeyDictionary[Any, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def _spawn_limiter() -> anyio.CapacityLimiter:
    """Two spawning threads at most (per event loop): more only fight the loop for the GIL."""
    import asyncio

    loop = asyncio.get_running_loop()
    limiter = _SPAWN_LIMITERS.get(loop)
    if limiter is None:
        limiter = _SPAWN_LIMITERS[loop] = anyio.CapacityLimiter(2)
    return limiter


async def _open_process(argv: list[str], *, cwd: Path, env: dict[str, str], user_kwargs: dict[str, object]) -> _SpawnedProcess:
    """Start ``argv`` in its own session, stdout and stderr into one pipe."""
    read_fd, write_fd = os.pipe()
    try:
        popen = await anyio.to_thread.run_sync(
            functools.partial(
                subprocess.Popen,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
                **user_kwargs,  # type: ignore[arg-type]
            ),
            limiter=_spawn_limiter(),
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return _SpawnedProcess(popen, read_fd)


async def _pump(
    process: Any,
    log: ServiceLog,
    on_line: Callable[[str], None] | None,
    closed: anyio.Event,
) -> None:
    """Pipe -> lines -> log (+ on_line). Lines longer than MAX_LINE_CHARS are split; a
    partial line is logged after PARTIAL_LINE_FLUSH seconds without more output."""
    stream = process.stdout
    assert stream is not None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    callback_failed = False
    at_eof = False

    def emit(lines: list[str]) -> None:
        nonlocal callback_failed
        log.write_lines(lines)
        if on_line is not None:
            for line in lines:
                try:
                    on_line(line)
                except Exception:
                    if not callback_failed:
                        callback_failed = True
                        _log.exception("on_line callback failed; later failures are not logged")

    try:
        while True:
            chunk = b""
            with anyio.move_on_after(PARTIAL_LINE_FLUSH if pending else math.inf):
                try:
                    chunk = await stream.receive(65536)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    at_eof = True
                    break
            if not chunk:  # quiet for a while with a partial line: log it as it is
                if pending:
                    emit([pending])
                    pending = ""
                continue
            text = pending + decoder.decode(chunk)
            lines = text.split("\n")
            pending = lines.pop()
            while len(pending) > MAX_LINE_CHARS:
                lines.append(pending[:MAX_LINE_CHARS])
                pending = pending[MAX_LINE_CHARS:]
            if any(len(line) > MAX_LINE_CHARS for line in lines):
                lines = [piece for line in lines for piece in _cut(line)]
            if lines:
                emit(lines)
        rest = pending + decoder.decode(b"", final=True)
        if rest:
            emit(_cut(rest))
    finally:
        closed.set()
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        if not at_eof:  # cancelled while a process still holds the pipe: close our end for real
            transport = getattr(process, "_transport", None)
            pipe = transport.get_pipe_transport(1) if transport is not None else None
            if pipe is not None:
                pipe.close()


def _cut(line: str) -> list[str]:
    """A line in pieces of at most MAX_LINE_CHARS (an empty line stays one empty line)."""
    if len(line) <= MAX_LINE_CHARS:
        return [line]
    return [line[i : i + MAX_LINE_CHARS] for i in range(0, len(line), MAX_LINE_CHARS)]
