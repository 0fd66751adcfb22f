"""The machine's process table, read in one pass over /proc.

Every process's pid, parent, group, session and start time, plus its ``SVC_INSTANCE`` marker
read on demand. Start times are computed the way psutil computes them, so a pid is
identified by (pid, start time) and a reused pid is never mistaken for ours.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import NamedTuple

import psutil

CTIME_TOLERANCE = 0.02  # seconds; /proc start times have clock-tick (10 ms) resolution
_INSTANCE_KEY = b"SVC_INSTANCE="


@dataclass(frozen=True, slots=True)
class ProcEntry:
    """One process as the kernel listed it at snapshot time."""

    pid: int
    ppid: int
    pgid: int
    create_time: float  # unix time, computed the way psutil does
    zombie: bool
    sid: int = 0  # session: every service leads its own, so its processes carry its pid here


class ProcTable(dict[int, ProcEntry]):
    """pid -> ProcEntry for every process, plus each one's SVC_INSTANCE, read on demand
    (reading another process's environment costs more than its stat line)."""

    def __init__(self) -> None:
        super().__init__()
        self._instances: dict[int, str | None] = {}
        self._index: tuple[dict[int, list[int]], dict[int, list[int]]] | None = None
        self._by_instance: dict[str, list[int]] = {}
        self._by_instance_since: float | None = None

    def index(self) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
        """(parent pid -> child pids, pgid -> member pids), built once per table: many
        services stopping together share one table, and must not each walk all of it."""
        if self._index is None:
            children: dict[int, list[int]] = {}
            by_pgid: dict[int, list[int]] = {}
            for e in self.values():
                children.setdefault(e.ppid, []).append(e.pid)
                by_pgid.setdefault(e.pgid, []).append(e.pid)
            self._index = (children, by_pgid)
        return self._index

    def instance_members(self, instance_id: str, since: float) -> list[int]:
        """Pids started at or after ``since`` whose SVC_INSTANCE is ``instance_id``."""
        if self._by_instance_since is None or since < self._by_instance_since:
            found: dict[str, list[int]] = {}
            for e in self.values():
                if e.create_time >= since:
                    instance = self.instance(e.pid)
                    if instance:
                        found.setdefault(instance, []).append(e.pid)
            self._by_instance, self._by_instance_since = found, since
        return [p for p in self._by_instance.get(instance_id, ()) if self[p].create_time >= since]

    def instance(self, pid: int) -> str | None:
        """The process's SVC_INSTANCE, or None (none set, unreadable, or gone)."""
        if pid not in self._instances:
            self._instances[pid] = _read_instance(pid)
        return self._instances[pid]


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # the unit of /proc/PID/stat times
_boot_time: float | None = None


class StatFields(NamedTuple):
    """What the process table and the resource sampler need from one ``/proc/PID/stat`` line."""

    state: bytes  # b"R", b"S", b"Z"...
    ppid: int
    pgid: int
    cpu_ticks: int  # utime + stime + cutime + cstime: its own CPU and that of reaped children
    start_ticks: int  # start time, in CLK_TCK since boot
    session: int  # session id (the pid of the session leader)


def parse_stat(stat: bytes) -> StatFields | None:
    """The fields of a ``/proc/PID/stat`` line, or None when it is cut short or malformed.

    Fields are counted from the last ``)``: the command name before it may hold
    spaces and parentheses."""
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        cpu_ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        return StatFields(fields[0], int(fields[1]), int(fields[2]), cpu_ticks, int(fields[19]), int(fields[3]))
    except (IndexError, ValueError):
        return None


def read_proc_file(path: str, limit: int = 4096) -> bytes | None:
    """Up to ``limit`` bytes of a /proc file, or None when the process is gone or hidden.

    ``os.open``/``os.read``: about half the cost of ``open()`` for these tiny files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


#: ``/proc/PID/stat`` states of a process that runs no code until it is resumed:
#: stopped by a signal (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) or by a tracer (a debugger).
PAUSED_STATES = frozenset({b"T", b"t"})
_PROCFS = os.path.isdir("/proc/self")


def is_gone(proc: psutil.Process) -> bool:
    """Has ``proc`` (checked against pid reuse by psutil) exited, zombie or reaped?"""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def is_running(pid: int) -> bool:
    """Does ``pid`` exist and run (a zombie, exited but not yet reaped, does not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's: it exists
    if not _PROCFS:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
    stat = read_proc_file(f"/proc/{pid}/stat")
    fields = parse_stat(stat) if stat else None
    return fields is not None and fields.state != b"Z"


def create_time(pid: int) -> float | None:
    """When ``pid`` started (unix time, as psutil and ``read_proc_table`` tell it), from one
    read of its stat line; None when it is gone."""
    global _boot_time
    if not _PROCFS:
        try:
            return psutil.Process(pid).create_time()
        except psutil.Error:
            return None
    stat = read_proc_file(f"/proc/{pid}/stat")
    fields = parse_stat(stat) if stat else None
    if fields is None:
        return None
    if _boot_time is None:
        _boot_time = psutil.boot_time()
    return fields.start_ticks / CLK_TCK + _boot_time


def is_paused(pid: int) -> bool:
    """Is ``pid`` stopped by a signal or a debugger (``T``/``t``)? False when it is gone.

    One read of its stat line (about 10 µs): cheap enough for every running service at
    each status request."""
    if not _PROCFS:
        try:
            return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
        except psutil.Error:
            return False
    stat = read_proc_file(f"/proc/{pid}/stat")
    fields = parse_stat(stat) if stat else None
    return fields is not None and fields.state in PAUSED_STATES


#: A first read of /proc/PID/environ this big holds nearly every environment; asking for
#: ENVIRON_LIMIT at once allocates 1 MiB per process, which costs more than the reads
#: (a leftover scan reads every process's environment).
ENVIRON_FIRST_READ = 1 << 16
ENVIRON_LIMIT = 1 << 20


def _read_instance(pid: int) -> str | None:
    environ = read_proc_file(f"/proc/{pid}/environ", ENVIRON_FIRST_READ)
    if environ is not None and len(environ) >= ENVIRON_FIRST_READ:  # a big environment: read it all
        environ = read_proc_file(f"/proc/{pid}/environ", ENVIRON_LIMIT)
    if environ is None:
        try:
            return psutil.Process(pid).environ().get("SVC_INSTANCE")
        except psutil.Error:
            return None
    at = environ.find(_INSTANCE_KEY)
    while at > 0 and environ[at - 1] != 0:
        at = environ.find(_INSTANCE_KEY, at + 1)
    if at < 0:
        return None
    start = at + len(_INSTANCE_KEY)
    end = environ.find(b"\0", start)
    return environ[start : end if end >= 0 else len(environ)].decode("utf-8", errors="replace")


def read_proc_table() -> ProcTable:
    """Every process on the machine (pid, parent, group, start time), one pass over /proc."""
    global _boot_time
    if not os.path.isdir("/proc/self"):
        return _read_proc_table_psutil()
    if _boot_time is None:
        _boot_time = psutil.boot_time()
    table = ProcTable()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = read_proc_file(f"/proc/{name}/stat")
        fields = parse_stat(stat) if stat else None
        if fields is None:
            continue
        pid = int(name)
        start = fields.start_ticks / CLK_TCK + _boot_time
        table[pid] = ProcEntry(pid, fields.ppid, fields.pgid, start, fields.state == b"Z", fields.session)
    return table


def _read_proc_table_psutil() -> ProcTable:
    table = ProcTable()
    for p in psutil.process_iter(["ppid", "create_time", "status"]):
        try:
            table[p.pid] = ProcEntry(
                p.pid,
                p.info["ppid"] or 0,
                os.getpgid(p.pid),
                p.info["create_time"] or 0.0,
                p.info["status"] == psutil.STATUS_ZOMBIE,
                os.getsid(p.pid),
            )
        except (OSError, psutil.Error):
            continue
    return table


def verified(entry: ProcEntry) -> psutil.Process | None:
    """A psutil handle on ``entry``'s process, or None when that pid is gone or reused."""
    try:
        proc = psutil.Process(entry.pid)
        if abs(proc.create_time() - entry.create_time) > CTIME_TOLERANCE:
            return None
        return proc
    except psutil.Error:
        return None


def find_instance_processes(instance_id: str, table: ProcTable | None = None) -> list[psutil.Process]:
    """Live processes carrying ``SVC_INSTANCE=instance_id`` (children of a previous daemon,
    double-forked daemons). Needs root or the same uid to see them."""
    if not instance_id:
        return []
    table = read_proc_table() if table is None else table
    found = []
    for entry in table.values():
        if not entry.zombie and entry.pid != os.getpid() and table.instance(entry.pid) == instance_id:
            proc = verified(entry)
            if proc is not None:
                found.append(proc)
    return found


def scan_instances(prefix: str = "", table: ProcTable | None = None) -> dict[str, list[psutil.Process]]:
    """Every SVC_INSTANCE value starting with ``prefix`` -> its live processes, in one scan."""
    table = read_proc_table() if table is None else table
    found: dict[str, list[psutil.Process]] = {}
    for entry in table.values():
        if entry.zombie or entry.pid == os.getpid():
            continue
        instance = table.instance(entry.pid)
        if instance is None or not instance.startswith(prefix):
            continue
        proc = verified(entry)
        if proc is not None:
            found.setdefault(instance, []).append(proc)
    return found


def process_uid(pid: int) -> int | None:
    """The real uid ``pid`` runs as, or None when it is gone or hidden."""
    status = read_proc_file(f"/proc/{pid}/status", 1 << 14)
    if status is None:
        try:
            return psutil.Process(pid).uids().real
        except psutil.Error:
            return None
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            fields = line.split()
            return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
    return None


def is_recorded_service(entry: ProcEntry, instance_id: str, table: ProcTable, uids: Collection[int]) -> bool:
    """May a process a state file names (its pid and start time already matched) be stopped?

    The file could have been forged, and a pid plus a start time can be copied from
    /proc; so the process must also run as one of ``uids`` (the daemon's, a service's
    ``user``) and carry the record's instance marker or lead its own session (every
    service's main process does, even after exec'ing with a cleared environment)."""
    if process_uid(entry.pid) not in uids:
        return False
    if instance_id and table.instance(entry.pid) == instance_id:
        return True
    try:
        return os.getsid(entry.pid) == entry.pid
    except OSError:
        return False
