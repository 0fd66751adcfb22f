"""Stopping a service's whole process tree, and the survivors of a previous daemon.

A service runs in its own session (``start_new_session=True``), so its pid is also
its process-group id and ``killpg`` reaches every process that stayed in the
group. Every process also inherits ``SVC_INSTANCE=<instance id>`` in its
environment: that marker finds descendants that left the group (double-forked,
``setsid`` daemons) and, after a daemon crash, the survivors of a previous daemon.

Every stop signal is followed by SIGCONT (as systemd does): a process stopped by
SIGSTOP or SIGTSTP (``T`` state) cannot act on SIGTERM until it runs again, so
without it a paused service would always cost the whole stop_timeout and a SIGKILL.

Signals only ever go to processes we can vouch for: our own unreaped child, its
process group while that group provably is ours, and processes whose identity
(pid plus start time) was checked against the kernel's process table just before.
A recorded pid whose start time no longer matches belongs to someone else now.

Reading the process table is one pass over ``/proc`` shared by every caller that
asks at the same moment (``snapshot_processes``), so stopping 200 services at once
costs a few table reads, not 200.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Awaitable, Callable, Collection, Iterable

import anyio
import psutil

from supervisord_lite.host.proctable import (
    CTIME_TOLERANCE,
    ProcTable,
    is_gone,
    is_recorded_service,
    process_uid,
    read_proc_table,
    verified,
)
from supervisord_lite.runtime.logs import get_logger

__all__ = [
    "ProcessTree",
    "kill_instance",
    "signal_verified",
    "snapshot_processes",
    "stop_orphans",
    "wait_until_gone",
]

KILL_GRACE = 5.0  # after SIGKILL, how long to wait for the kernel to remove the processes
KILL_ROUNDS = 4  # SIGKILL sweeps: processes forked during the stop get caught by a later round

_log = get_logger(component="process")


class _Batch:
    """One process-table read that every caller asking at the same moment waits for."""

    __slots__ = ("done", "table")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.table = ProcTable()


_pending_batch: _Batch | None = None


async def snapshot_processes() -> ProcTable:
    """A process table read after this call began; concurrent callers share one read.

    The read runs in a worker thread: with a thousand services it is a few thousand
    /proc files (tens of milliseconds), and the event loop meanwhile goes on with what
    cannot wait, such as starting a crashed service again while its predecessor's
    leftovers are swept."""
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
        with anyio.CancelScope(shield=True):  # the batch's other callers wait for this read
            try:
                batch.table = await anyio.to_thread.run_sync(read_proc_table)
            finally:
                batch.done.set()
    return batch.table


def signal_verified(proc: psutil.Process, sig: int) -> bool:
    """Signal ``proc`` if it is still the process we verified (psutil checks pid reuse)."""
    if proc.pid in (0, 1, os.getpid()):
        return False
    try:
        proc.send_signal(sig)
        return True
    except psutil.Error:
        return False


def _with_sigcont(sig: int) -> tuple[int, ...]:
    """The signals that stop with ``sig``: ``sig``, then SIGCONT so that a paused
    process wakes up to act on it (SIGKILL needs no help; SIGCONT needs no second)."""
    return (sig,) if sig in (signal.SIGKILL, signal.SIGCONT) else (sig, signal.SIGCONT)


def _stop_verified(proc: psutil.Process, sig: int) -> None:
    """``sig`` then SIGCONT to ``proc``, while it is still the process we verified."""
    for each in _with_sigcont(sig):
        if not signal_verified(proc, each):
            return


async def _wait_all_gone(procs: Iterable[psutil.Process]) -> None:
    """Return once every process has exited (zombies count as gone). No deadline: wrap it."""
    pending = [p for p in procs if not is_gone(p)]
    if not pending:
        return
    async with anyio.create_task_group() as tg:
        for p in pending:
            tg.start_soon(wait_until_gone, p)


async def wait_until_gone(proc: psutil.Process) -> None:
    """Return once ``proc`` has exited (a zombie counts as gone): through a pidfd where
    the kernel has them, by polling otherwise. No deadline: wrap it."""
    fd = -1
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(proc.pid)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return
    if fd >= 0:
        try:
            if is_gone(proc):  # the pid may have been reused before pidfd_open; the check after is what counts
                return
            await anyio.wait_readable(fd)  # a pidfd turns readable when the process exits
            return
        finally:
            os.close(fd)
    delay = 0.005
    while not is_gone(proc):
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def kill_instance(
    instance_id: str,
    *,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 10.0,
    pids_hint: Iterable[tuple[int, float]] = (),
    uids: Collection[int] | None = None,
) -> list[int]:
    """Stop every process of a service instance that is not our child (a previous daemon's).

    Finds them by ``SVC_INSTANCE`` and by ``pids_hint`` ((pid, create_time) pairs from a
    state file, checked against the kernel so a reused pid is never touched), plus their
    process groups and descendants; sends ``sig``, polls until they are gone, SIGKILLs
    what is left after ``timeout``. Returns the pids it found.

    Only processes running as one of ``uids`` (default: the daemon's own) are taken as
    the instance's; a hinted pid must also carry the marker or lead its own session.
    """
    hints = list(pids_hint)
    allowed = frozenset(uids) if uids is not None else frozenset({os.geteuid()})
    table = await snapshot_processes()
    owner = ProcessTree(instance_id=instance_id, create_time=min((c for _, c in hints), default=0.0) - 1.0)
    owner.uids = allowed
    for pid, ctime in hints:
        entry = table.get(pid)
        if entry is None or entry.zombie or abs(entry.create_time - ctime) > CTIME_TOLERANCE:
            continue  # gone, or the pid now belongs to another process
        if not is_recorded_service(entry, instance_id, table, allowed):
            _log.warning("not stopping a recorded pid: it is not a service of ours", pid=pid, instance=instance_id)
            continue
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
    uids: Collection[int] | None = None,
) -> list[int]:
    """``kill_instance`` for one state-file record (pid and create_time may be missing)."""
    hints = [(int(pid), float(create_time))] if pid and create_time else []
    return await kill_instance(instance_id, sig=sig, timeout=timeout, pids_hint=hints, uids=uids)


class ProcessTree:
    """Who belongs to one service: its group(s), descendants, and SVC_INSTANCE carriers."""

    def __init__(self, instance_id: str, create_time: float, main_pid: int | None = None) -> None:
        self.instance_id = instance_id
        self.create_time = create_time
        self.main_pid = main_pid  # excluded from collect(): the owner waits for it itself
        self.groups: set[int] = set()  # pgids known to be ours
        self.known: dict[int, psutil.Process] = {}
        self.seen: set[int] = set()
        self.main_alive: Callable[[], bool] = lambda: False
        self.uids: frozenset[int] | None = None  # when set, marker carriers must run as one of these
        self.presignalled: tuple[int, float] | None = None  # (signal, when) sent by presignal()

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
            member_pids.update(
                p for p in table.instance_members(self.instance_id, self.create_time - 1.0)
                if p != me and (self.uids is None or process_uid(p) in self.uids)
            )
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

    def presignal(self, sig: int) -> None:
        """``sig`` then SIGCONT to the main process's group at once, while our live main
        still holds the pgid (so the group is provably ours). The ``terminate`` that follows
        with the same signal skips that first signal and counts its timeout from now."""
        if self.main_pid is None or self.main_pid not in self.groups or not self.main_alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            for each in _with_sigcont(sig):
                os.killpg(self.main_pid, each)
        self.presignalled = (sig, anyio.current_time())

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
        presignalled, self.presignalled = self.presignalled, None
        signalled_at = presignalled[1] if presignalled is not None and presignalled[0] == sig else None
        early = signalled_at is not None or (self.main_pid in self.groups and self.main_alive())
        if early and signalled_at is None:  # our live main still holds its pgid: signal at once, look around after
            with contextlib.suppress(ProcessLookupError, PermissionError):
                for each in _with_sigcont(sig):
                    os.killpg(self.main_pid, each)  # type: ignore[arg-type]
        table = await snapshot_processes() if table is None else table
        members = self.collect(table)
        if not early:
            for each in _with_sigcont(sig):
                self.signal_groups(each, table)
        for pid, proc in members.items():
            if table[pid].pgid not in self.groups:  # group members already got it via killpg
                _stop_verified(proc, sig)
        signalled = set(members)
        deadline = (anyio.current_time() if signalled_at is None else signalled_at) + max(0.0, timeout)
        killing = 0
        for _ in range(64):  # bounded even against a fork bomb
            grace = deadline - anyio.current_time() if not killing else KILL_GRACE
            with anyio.move_on_after(max(0.0, grace)):
                if main_wait is not None and self.main_alive():
                    await main_wait()
                await _wait_all_gone(members.values())
            table = await snapshot_processes()
            members = self.collect(table)
            main_left = main_wait is not None and self.main_alive()
            if not members and not main_left:
                return True
            if not killing and anyio.current_time() < deadline:
                for pid, proc in members.items():  # forked after the signal: they never got it
                    if pid not in signalled:
                        _stop_verified(proc, sig)
                signalled.update(members)
                continue
            if killing >= KILL_ROUNDS:
                break
            killing += 1
            self.signal_groups(signal.SIGKILL, table)
            for proc in members.values():
                signal_verified(proc, signal.SIGKILL)
            main_entry = table.get(self.main_pid) if main_left and self.main_pid is not None else None
            main_proc = verified(main_entry) if main_entry is not None else None
            if main_proc is not None:  # in case it moved out of its own group
                signal_verified(main_proc, signal.SIGKILL)
        _log.warning("processes survived SIGKILL", instance=self.instance_id, pids=sorted(members))
        return False
