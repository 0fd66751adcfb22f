"""A running service: our child, or a survivor of a previous daemon we adopted.

``ServiceProcess`` is what the supervisor holds for each running service: it waits
for the main process, signals the service's process group, and stops the whole tree
(``runtime.termination``). ``runtime.spawn`` creates one for a new child; ``adopt``
for a process a crashed daemon left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from typing import Protocol

import anyio
import psutil

try:
    import sniffio
except ImportError:  # anyio does without it
    sniffio = None

from supervisord_lite.host.proctable import CTIME_TOLERANCE, ProcEntry, ProcTable, read_proc_table, verified
from supervisord_lite.runtime.logs import ServiceLog, get_logger
from supervisord_lite.runtime.termination import ProcessTree, signal_verified, wait_until_gone

__all__ = ["ADOPTED_EXIT_UNKNOWN", "ChildProcess", "ServiceProcess", "adopt", "call_as_asyncio"]

OUTPUT_DRAIN = 0.2  # after the main process exits, how long wait() lets the pump finish
ADOPTED_EXIT_UNKNOWN = 255  # returncode of an adopted process: not our child, its status is lost

_log = get_logger(component="process")


class ChildProcess(Protocol):
    """The main process of a service we started ourselves (``runtime.spawn``)."""

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class OutputPump(Protocol):
    """What pumps the child's output into its log (``runtime.spawn``)."""

    def close(self) -> None: ...


class ServiceProcess:
    """A running service: our child (from ``spawn``) or a survivor we adopted (``adopt``).

    ``pid`` is also the process-group id (the service is a session leader).
    """

    __slots__ = (
        "_adopted_rc", "_output_done", "_output_open", "_output_pump", "_process", "_stop_lock", "_tree",
        "create_time", "env", "instance_id", "log", "name", "pgid", "pid", "started_at",
    )

    def __init__(
        self,
        *,
        name: str,
        instance_id: str,
        pid: int,
        pgid: int,
        create_time: float,
        started_at: float,
        process: ChildProcess | None = None,
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
        # until the output pump has logged everything (an adopted process's output went to the old daemon)
        self._output_open = process is not None
        self._output_pump: OutputPump | None = None
        self._output_done: anyio.Event | None = None  # made only when wait() has to wait for the pump
        self._stop_lock: anyio.Lock | None = None  # made by the first stop (most instances are never stopped twice at once)
        # kept only for exec probes, which run with the service's environment; a whole
        # copy of the environment per service adds up with hundreds of them
        self.env: dict[str, str] = dict(env or {})
        self._tree = ProcessTree(instance_id=instance_id, create_time=create_time, main_pid=pid)
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
        if self._output_open:
            if self._output_done is None:
                self._output_done = anyio.Event()
            with anyio.move_on_after(OUTPUT_DRAIN):
                await self._output_done.wait()
        return rc

    def on_exit(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Have the event loop call ``callback`` once the main process has exited, with
        no task waiting for it (a reader on the child's pidfd); returns what cancels that.

        None when it cannot be watched that way (an adopted process, no pidfd, an event
        loop other than asyncio's): then ``wait()`` in a task."""
        if self._process is None:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        if self._process.returncode is not None:  # reaped: its pid may be someone else's by now
            handle = loop.call_soon(call_as_asyncio, callback)
            return handle.cancel
        try:
            pidfd = os.pidfd_open(self.pid)  # not reaped yet: the pid is still our child's
        except (AttributeError, OSError):
            return None
        return _ExitWatch(loop, pidfd, callback).cancel

    @property
    def output_open(self) -> bool:
        """Whether the pump may still log output of this instance."""
        return self._output_open

    def attach_output(self, pump: OutputPump) -> None:
        """The pump of this child's output (``close_output`` stops it)."""
        self._output_pump = pump

    def output_finished(self) -> None:
        """The pump has logged everything and closed the pipe."""
        self._output_open = False
        self._output_pump = None
        if self._output_done is not None:
            self._output_done.set()

    def close_output(self) -> None:
        """Stop pumping the output (nobody supervises the service any more): what was read is logged."""
        if self._output_pump is not None:
            self._output_pump.close()

    async def _wait_adopted(self) -> None:
        proc = verified(ProcEntry(self.pid, 0, self.pgid, self.create_time, False))
        if proc is not None:
            await wait_until_gone(proc)
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
                signal_verified(proc, sig)

    def begin_stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """``sig`` (then SIGCONT) to the process group now; a ``stop`` with the same signal
        that follows does not send it again and counts its timeout from this moment."""
        self._tree.presignal(sig)

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Stop the whole tree and return the main process's returncode.

        ``sig`` goes to the process group and to every descendant or SVC_INSTANCE carrier
        that left it; after ``timeout`` seconds whatever is still alive (main, group,
        descendants, escaped daemons) gets SIGKILL. Safe to call again or after the process
        exited: stragglers are still swept.
        """
        if self._stop_lock is None:
            self._stop_lock = anyio.Lock()
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


def call_as_asyncio(callback: Callable[[], None]) -> None:
    """Call ``callback`` from a bare event-loop callback (no task) so that it may use
    anyio, e.g. start a task: outside a task sniffio cannot tell the library by itself,
    so this declares asyncio through sniffio's ``current_async_library_cvar``."""
    if sniffio is None:  # anyio then takes a running asyncio loop for asyncio
        callback()
        return
    token = sniffio.current_async_library_cvar.set("asyncio")
    try:
        callback()
    finally:
        sniffio.current_async_library_cvar.reset(token)


class _ExitWatch:
    """A reader on a pidfd: the pidfd becomes readable when the process exits."""

    __slots__ = ("_callback", "_fd", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, callback: Callable[[], None]) -> None:
        self._loop, self._fd, self._callback = loop, fd, callback
        loop.add_reader(fd, self._exited)

    def _exited(self) -> None:
        callback = self._callback
        self.cancel()
        call_as_asyncio(callback)

    def cancel(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            self._loop.remove_reader(fd)
            os.close(fd)


def _pgid_of(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except OSError:
        return None


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
