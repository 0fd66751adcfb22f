"""What a daemon leaves for its successor, what a successor finds, and stopping it.

The state file (``state_dir/state.json``) records the daemon's pid, what was wanted
(what `svc up` and `svc down` asked for) and every running service's pid, group,
session, user, start time and instance marker. A clean stop keeps the file with the
wanted set, so the next daemon (at boot) starts the same services again.

The file is the successor's guide, not its only one: every service process carries
``SVC_INSTANCE=<prefix><id>`` (the prefix derived from the state_dir), and every
service leads its own session, so a daemon that died between two writes, or a
program that wrote over its environment, still leaves nothing a successor cannot find.

Which processes are survivors is decided here once (``find_survivors``), for both
callers: the CLI stops them synchronously when no daemon runs (``stop_survivors``),
and a starting daemon stops them with the runtime's async termination.

This module is over 500 lines on purpose: the record format, the rule for what counts
as a survivor and stopping survivors are one contract between a dead daemon, its
successor and the CLI; split, the rule could drift from what is recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import pwd
import signal
import stat
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from supervisord_lite.core import graph
from supervisord_lite.core.model import Manifest
from supervisord_lite.core.paths import instance_prefix
from supervisord_lite.host import statedir
from supervisord_lite.host.proctable import (
    CTIME_TOLERANCE,
    ProcEntry,
    ProcTable,
    is_gone,
    parse_stat,
    read_proc_file,
    read_proc_table,
    verified,
)

STATE_FILE = "state.json"
DAEMON_LOCK = "daemon.lock"  # the daemon's flock: one daemon per state_dir
DEFAULT_STOP_SIGNAL = signal.SIGTERM  # for a survivor whose service the manifest no longer lists
DEFAULT_STOP_TIMEOUT = 10.0
KILL_GRACE = 5.0  # after SIGKILL, how long the kernel gets to remove the processes
KILL_ROUNDS = 4  # SIGKILL sweeps for what forked during the stop


@dataclass(frozen=True, slots=True)
class RecordedProcess:
    """One running service as the state file records it.

    Read back from a file, a field that is missing or of the wrong type is None (or
    "" for the instance id): the successor then finds the process by what is left."""

    pid: int | None
    pgid: int | None
    create_time: float | None
    instance_id: str
    sid: int | None = None  # its session: a service leads its own, so this is its pid
    uid: int | None = None  # the user it runs as (real uid)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "pgid": self.pgid,
            "sid": self.sid,
            "uid": self.uid,
            "create_time": self.create_time,
            "instance_id": self.instance_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordedProcess:
        instance_id = data.get("instance_id", "")
        return cls(
            pid=_whole_number(data.get("pid")),
            pgid=_whole_number(data.get("pgid")),
            create_time=_number(data.get("create_time")),
            instance_id=instance_id if isinstance(instance_id, str) else "",
            sid=_whole_number(data.get("sid")),
            uid=_whole_number(data.get("uid")),
        )


@dataclass(frozen=True)
class DaemonState:
    """The whole state file: who wrote it, what was wanted, what was running."""

    daemon_pid: int | None = None
    manifest: str = ""
    wanted: tuple[str, ...] = ()
    processes: Mapping[str, RecordedProcess] = field(default_factory=dict)
    restarts: Mapping[str, int] = field(default_factory=dict)  # each service's count (none: 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "daemon_pid": self.daemon_pid,
            "manifest": self.manifest,
            "wanted": list(self.wanted),
            "processes": {name: record.to_dict() for name, record in self.processes.items()},
            "restarts": dict(self.restarts),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DaemonState:
        """Whatever parses of a file a crashed daemon (or a person) left; never raises."""
        wanted = data.get("wanted")
        processes = data.get("processes")
        manifest = data.get("manifest", "")
        restarts = data.get("restarts")  # absent from files older daemons wrote
        return cls(
            daemon_pid=_whole_number(data.get("daemon_pid")),
            manifest=manifest if isinstance(manifest, str) else "",
            wanted=tuple(n for n in wanted if isinstance(n, str)) if isinstance(wanted, list) else (),
            processes={
                name: RecordedProcess.from_dict(info)
                for name, info in (processes.items() if isinstance(processes, dict) else ())
                if isinstance(name, str) and isinstance(info, dict)
            },
            restarts={
                name: count
                for name, count in (restarts.items() if isinstance(restarts, dict) else ())
                if isinstance(name, str) and _whole_number(count) is not None and count > 0
            },
        )

    def wanted_services(self, manifest: Manifest) -> list[str]:
        """What was wanted that ``manifest`` still lists as active (the successor starts those)."""
        return [n for n in self.wanted if n in manifest.services and manifest.services[n].is_active]


def read_state(
    path: Path, on_untrusted: Callable[[str], None] | None = None, owners: Collection[int] | None = None
) -> DaemonState:
    """The state file at ``path``; an empty state when it is missing or unreadable.

    Only a regular file owned by the daemon's uid (or one of ``owners``) is believed (it
    names processes to kill): anything else is ignored and ``on_untrusted`` is told why."""
    try:
        data = json.loads(statedir.read_trusted(path, owners=owners))
    except statedir.UntrustedFile as exc:
        if on_untrusted is not None:
            on_untrusted(f"{exc}: ignored, nothing in it is stopped or resumed")
        return DaemonState()
    except (OSError, ValueError):
        return DaemonState()
    return DaemonState.from_dict(data) if isinstance(data, dict) else DaemonState()


def write_state(path: Path, state: DaemonState) -> None:
    """Replace the state file atomically (a reader sees the old file or the new one).
    Written 0600 relative to state_dir: a link at either name is replaced, not followed."""
    statedir.write_atomic(path, json.dumps(state.to_dict()).encode(), path.with_suffix(".tmp").name)


def trusted_uids(*users: str | None) -> frozenset[int]:
    """Whose processes a successor may stop: the daemon's uid and the uids of the
    services' configured ``user``s (a name, or a number when no user has that name)."""
    uids = {os.geteuid()}
    for user in users:
        if not user:
            continue
        try:
            uids.add(pwd.getpwnam(user).pw_uid)
        except KeyError:
            if user.isdigit():
                uids.add(int(user))
    return frozenset(uids)


def record_process(pid: int, pgid: int, create_time: float, instance_id: str) -> RecordedProcess:
    """The state-file record of a running service, with its session and user read from /proc
    (once per process: a state write covers every service, often)."""
    sid, uid = _identity(pid, create_time)
    return RecordedProcess(pid=pid, pgid=pgid, create_time=create_time, instance_id=instance_id, sid=sid, uid=uid)


@functools.lru_cache(maxsize=4096)
def _identity(pid: int, create_time: float) -> tuple[int | None, int | None]:
    line = read_proc_file(f"/proc/{pid}/stat")
    fields = parse_stat(line) if line else None
    return (fields.session if fields else None), _uid_of(pid)


def read_owned_state(path: Path, owners: Collection[int]) -> DaemonState:
    """The state file, only when it is a regular file owned by one of ``owners``.

    Its records decide which processes get signalled and what a daemon starts at boot:
    a file another user could have written is not followed."""
    try:
        st = os.lstat(path)
    except OSError:
        return DaemonState()
    if not stat.S_ISREG(st.st_mode) or st.st_uid not in owners:
        return DaemonState()
    return read_state(path, owners=owners)


def trusted_owners() -> set[int]:
    """Whose state file this process follows: its own, or root's (a system daemon's)."""
    return {os.geteuid(), 0}


def forget_stopped(path: Path, stopped: Collection[str], unwanted: Collection[str] = ()) -> None:
    """After stopping survivors without a daemon: drop the records of the ``stopped``
    services, and take the ``unwanted`` ones (a `svc down`) out of the wanted set, so the
    next daemon does not start them. Only a file this user may follow is changed, and
    it keeps its owner (a root `svc` acting on a user's platform)."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    state = read_owned_state(path, trusted_owners())
    gone, unwant = set(stopped), set(unwanted)
    kept = DaemonState(
        daemon_pid=state.daemon_pid,
        manifest=state.manifest,
        wanted=tuple(n for n in state.wanted if n not in unwant),
        processes={n: r for n, r in state.processes.items() if n not in gone},
    )
    if kept == state:
        return
    write_state(path, kept)
    if os.geteuid() == 0 and st.st_uid != 0:
        with contextlib.suppress(OSError):
            os.chown(path, st.st_uid, st.st_gid)


# ----------------------------------------------------------------------------- survivors


@dataclass(frozen=True)
class Survivor:
    """What is left of one service a dead daemon ran: its processes (checked against pid
    reuse) and the process groups proven to be its own."""

    service: str
    instance_id: str
    groups: frozenset[int]
    processes: tuple[psutil.Process, ...]
    pgids: Mapping[int, int] = field(default_factory=dict)  # pid -> its process group

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(sorted(p.pid for p in self.processes))


def find_survivors(
    state_dir: Path,
    state: DaemonState,
    table: ProcTable | None = None,
    uids: Collection[int] = (),
    on_refused: Callable[[str, int], None] | None = None,
) -> list[Survivor]:
    """Every process of this state_dir's platform still running, by service.

    A recorded main process counts when its start time, its user and either its
    ``SVC_INSTANCE`` marker or its session still match the record. Every service leads
    its own session, so the processes of a verified leader's session are found even
    when they rewrote their environment (redis-server writes its title over it). Then
    every process carrying this state_dir's instance marker, and every descendant of
    what was found. Nothing else: never by name."""
    table = read_proc_table() if table is None else table
    prefix = instance_prefix(state_dir)
    me = os.getpid()
    members: dict[str, set[int]] = {}
    instances: dict[str, str] = {}
    sessions: dict[int, str] = {}
    recorded_pgid: dict[str, int] = {}
    # a process is only ever ours when it runs as a user the platform runs as: anyone can
    # copy a pid and start time from /proc, or put this state_dir's marker in their environment
    allowed = {os.geteuid(), *(r.uid for r in state.processes.values() if r.uid is not None), *uids}
    for name, record in state.processes.items():
        instances[name] = record.instance_id
        entry = table.get(record.pid) if record.pid else None
        if entry is None or entry.pid in (0, 1, me) or entry.zombie:
            continue
        if not _is_recorded_process(entry, record, table, allowed):
            if on_refused is not None:
                on_refused(name, entry.pid)
            continue
        members.setdefault(name, set()).add(entry.pid)
        if entry.sid == entry.pid:  # it leads its session: the session is the service's
            sessions[entry.sid] = name
        if record.pgid:
            recorded_pgid[name] = record.pgid
    by_instance = {record.instance_id: name for name, record in state.processes.items() if record.instance_id}
    for entry in table.values():
        if entry.zombie or entry.pid in (0, 1, me):
            continue
        owner = sessions.get(entry.sid)
        if owner is None:
            instance = table.instance(entry.pid)
            if not instance or not instance.startswith(prefix) or _uid_of(entry.pid) not in allowed:
                continue
            owner = by_instance.get(instance) or _service_name(entry.pid) or instance
            instances.setdefault(owner, instance)
        members.setdefault(owner, set()).add(entry.pid)
    children, _ = table.index()
    found = []
    for name, pids in members.items():
        stack = list(pids)
        while stack:  # descendants, even those that left the session and cleared their environment
            for child in children.get(stack.pop(), ()):
                if child not in pids and child != me and not table[child].zombie:
                    pids.add(child)
                    stack.append(child)
        survivor = _survivor(name, instances.get(name, ""), pids, recorded_pgid.get(name), table)
        if survivor is not None:
            found.append(survivor)
    return sorted(found, key=lambda s: s.service)


def _is_recorded_process(entry: ProcEntry, record: RecordedProcess, table: ProcTable, allowed: Collection[int]) -> bool:
    """Is the live ``entry`` still the process ``record`` describes (and not a reused pid,
    nor someone else's process whose pid and start time were copied into the file)?

    Its user must be one the platform runs as (and the recorded one, when recorded), and
    it must carry the record's marker or hold the service's session: the recorded one,
    or, for a record that predates sessions, its own (every service leads its own)."""
    if entry.zombie:
        return False
    uid = _uid_of(entry.pid)
    if uid not in allowed or (record.uid is not None and uid != record.uid):
        return False
    marked = bool(record.instance_id) and table.instance(entry.pid) == record.instance_id
    if record.create_time is None:
        return marked  # an old or damaged record: only the marker can vouch for it
    if abs(entry.create_time - record.create_time) > CTIME_TOLERANCE:
        return False
    session = entry.sid == record.sid if record.sid is not None else entry.sid == entry.pid
    return marked or session


def _survivor(name: str, instance_id: str, pids: set[int], recorded_pgid: int | None, table: ProcTable) -> Survivor | None:
    procs = []
    pgids = {}
    for pid in sorted(pids):
        proc = verified(table[pid])
        if proc is not None:
            procs.append(proc)
            pgids[pid] = table[pid].pgid
    if not procs:
        return None
    # a group whose leader is one of ours, or the recorded group while one of ours is in it
    # (a group's number cannot be reused while it has members)
    groups = frozenset(g for g in pgids.values() if g in pgids or g == recorded_pgid)
    return Survivor(name, instance_id, groups, tuple(procs), pgids)


def leftover_services(state_dir: Path, state: DaemonState | None = None) -> list[str]:
    """Names of the services whose processes a dead daemon left running."""
    if state is None:
        state = read_owned_state(state_dir / STATE_FILE, trusted_owners())
    return sorted({s.service for s in find_survivors(state_dir, state)})


def stop_steps(found: Collection[Survivor], manifest: Manifest | None) -> list[list[Survivor]]:
    """The survivors in the order the daemon stops services: dependents first; what the
    manifest no longer lists before anything else."""
    if not found:
        return []
    if manifest is None:
        return [list(found)]
    position = {name: i for i, step in enumerate(graph.stop_plan(manifest, None)) for name in step}
    steps: dict[int, list[Survivor]] = {}
    for survivor in found:
        steps.setdefault(position.get(survivor.service, -1), []).append(survivor)
    return [steps[k] for k in sorted(steps)]


def stop_settings(manifest: Manifest | None, service: str) -> tuple[signal.Signals, float]:
    """(stop signal, stop timeout) of a service; the defaults for one the manifest no longer lists."""
    spec = manifest.services.get(service) if manifest is not None else None
    if spec is None:
        return DEFAULT_STOP_SIGNAL, DEFAULT_STOP_TIMEOUT
    return spec.stop_signal, spec.stop_timeout


@dataclass(frozen=True)
class StopReport:
    """What stopping the survivors did: service -> pids now gone, and service -> pids still there."""

    stopped: Mapping[str, tuple[int, ...]]
    left: Mapping[str, tuple[int, ...]]
    # recorded pids that are someone else's now (another user's, no marker or session of
    # ours): never signalled, and their records dropped
    not_ours: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


def stop_survivors(
    state_dir: Path,
    state: DaemonState,
    manifest: Manifest | None = None,
    services: Collection[str] | None = None,
) -> StopReport:
    """Stop what a dead daemon left running (only ``services`` when given), synchronously.

    In the daemon's stop order, each step at once: the service's ``stop_signal`` to its
    groups and processes, up to its ``stop_timeout`` for them to exit, then SIGKILL. A
    last look catches what forked meanwhile. Call it holding the daemon lock
    (``daemon_lock``): a daemon starting meanwhile would have its fresh services stopped."""

    not_ours: dict[str, set[int]] = {}

    def look() -> list[Survivor]:
        found = find_survivors(state_dir, state, on_refused=lambda name, pid: not_ours.setdefault(name, set()).add(pid))
        return [s for s in found if services is None or s.service in services]

    signalled: dict[str, set[int]] = {}
    refused: set[int] = set()  # not ours to signal (another user's): no point waiting for them
    found = look()
    for step in stop_steps(found, manifest):
        for survivor in step:
            signalled.setdefault(survivor.service, set()).update(survivor.pids)
        refused |= _stop_step(step, manifest)
    settled = not found
    for _ in range(KILL_ROUNDS):
        again = [s for s in look() if not set(s.pids) <= refused] if found else []
        if not again:
            settled = not refused
            break
        for survivor in again:  # forked during the stop, or slow to go: no second grace period
            signalled.setdefault(survivor.service, set()).update(survivor.pids)
            if not _signal(survivor, signal.SIGKILL):
                refused.update(survivor.pids)
        _wait_gone([p for s in again for p in s.processes], time.monotonic() + KILL_GRACE)
    left = {} if settled else {s.service: s.pids for s in look()}
    stopped = {  # in the order they were stopped
        name: tuple(sorted(pids - set(left.get(name, ()))))
        for name, pids in signalled.items()
        if pids - set(left.get(name, ()))
    }
    refused_records = {name: tuple(sorted(pids)) for name, pids in not_ours.items() if services is None or name in services}
    return StopReport(stopped=stopped, left=left, not_ours=refused_records)


def _stop_step(step: list[Survivor], manifest: Manifest | None) -> set[int]:
    """Stop one step's survivors at once, each with its own signal and timeout; return
    the pids of those that could not be signalled at all."""
    now = time.monotonic()
    deadlines = {}
    refused: set[int] = set()
    pending = []
    for survivor in step:
        sig, timeout = stop_settings(manifest, survivor.service)
        if _signal(survivor, sig):
            deadlines[survivor.service] = now + max(0.0, timeout)
            pending.append(survivor)
        else:
            refused.update(survivor.pids)
    killed: list[psutil.Process] = []
    while pending:
        _wait_gone([p for s in pending for p in s.processes], min(deadlines[s.service] for s in pending))
        now = time.monotonic()
        waiting = []
        for survivor in pending:
            alive = [p for p in survivor.processes if not is_gone(p)]
            if not alive:
                continue
            if now >= deadlines[survivor.service]:
                _signal(survivor, signal.SIGKILL)
                killed.extend(alive)
            else:
                waiting.append(survivor)
        pending = waiting
    _wait_gone(killed, time.monotonic() + KILL_GRACE)
    return refused


def _signal(survivor: Survivor, sig: int) -> bool:
    """``sig`` to the survivor's groups, and to each of its processes outside them; False
    when none of them could be signalled (gone, or another user's)."""
    groups = set()
    for pgid in survivor.groups:
        try:
            os.killpg(pgid, sig)
            groups.add(pgid)
        except OSError:
            pass  # gone, or not ours to signal: each process gets it on its own below
    reached = bool(groups)
    for proc in survivor.processes:
        if survivor.pgids.get(proc.pid) not in groups and proc.pid not in (0, 1, os.getpid()):
            try:
                proc.send_signal(sig)  # psutil refuses a pid that now belongs to another process
                reached = True
            except psutil.Error:
                pass
    return reached


def _wait_gone(procs: list[psutil.Process], until: float) -> list[psutil.Process]:
    """Wait until every process has exited (a zombie counts: it holds nothing) or the
    ``until`` moment (``time.monotonic``); return those still alive."""
    alive = procs
    delay = 0.005
    while True:
        alive = [p for p in alive if not is_gone(p)]
        remaining = until - time.monotonic()
        if not alive or remaining <= 0:
            return alive
        psutil.wait_procs(alive, timeout=min(delay, remaining))
        delay = min(delay * 2, 0.1)


def _uid_of(pid: int) -> int | None:
    """The real uid of ``pid`` (what psutil's ``uids().real`` says), read from its status
    file alone: a state write records every new process, and ``psutil.Process`` reads more."""
    status = read_proc_file(f"/proc/{pid}/status", limit=8192)
    if status is None:
        return None
    start = status.find(b"\nUid:")
    if start < 0:
        return None
    try:
        return int(status[start + 5 :].split(None, 1)[0])
    except (ValueError, IndexError):
        return None


def _service_name(pid: int) -> str | None:
    try:
        return psutil.Process(pid).environ().get("SVC_SERVICE") or None
    except psutil.Error:
        return None


@contextlib.contextmanager
def daemon_lock(state_dir: Path, wait: float = 0.0) -> Iterator[bool]:
    """Hold the lock a daemon holds (``state_dir/daemon.lock``) while stopping what a dead
    one left: no daemon can start meanwhile. Yields False when a live daemon holds it for
    longer than ``wait`` seconds. Where there is no lock file no daemon ever ran: True."""
    try:
        fd = os.open(state_dir / DAEMON_LOCK, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        yield True  # missing (never ran), or not ours to open (then its processes are not ours to signal)
        return
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)  # releases the lock


def lock_holder(state_dir: Path) -> int | None:
    """The pid a daemon wrote into its lock file (never through a link), or None."""
    try:
        fd = os.open(state_dir / DAEMON_LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            pid = int(os.read(fd, 32).decode().strip() or 0)
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def _whole_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
