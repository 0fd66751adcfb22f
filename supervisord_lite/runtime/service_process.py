"""A running service: our child, or a survivor of a previous daemon we adopted.

``ServiceProcess`` is what the supervisor holds for each running service: it waits
for the main process, signals the service's process group, and stops the whole tree
(``runtime.termination``). ``runtime.spawn`` creates one for a new child; ``adopt``
for a process a crashed daemon left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping
from typing import Protocol

import anyio
import psutil

from supervisord_lite.host.proctable import CTIME_TOLERANCE, ProcEntry, ProcTable, read_proc_table, verified
from supervisord_lite.runtime.logs import ServiceLog, get_logger
from supervisord_lite.runtime.termination import ProcessTree, signal_verified, wait_until_gone

__all__ = ["ADOPTED_EXIT_UNKNOWN", "ChildProcess", "ServiceProcess", "adopt"]

OUTPUT_DRAIN = 0.2  # after the main process exits, how long wait() lets the pump finish
ADOPTED_EXIT_UNKNOWN = 255  # returncode of an adopted process: not our child, its status is lost

_log = get_logger(component="process")


class ChildProcess(Protocol):
    """The main process of a service we started ourselves (``runtime.spawn``)."""

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


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
        self.output_closed = anyio.Event()  # set by the output pump once it has logged everything
        if process is None:
            self.output_closed.set()  # an adopted process's output went to the old daemon
        self._stop_lock = anyio.Lock()
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
        with anyio.move_on_after(OUTPUT_DRAIN):
            await self.output_closed.wait()
        return rc

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
