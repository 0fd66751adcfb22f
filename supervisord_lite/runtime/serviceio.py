"""The I/O a service's lifecycle needs, behind one narrow seam.

Everything a ``Runner`` and the ``Supervisor`` do to the machine goes through a
``ServiceIO``: spawning, signalling a process group, the port table, probes, the
wall clock, logs and the state file. ``RealServiceIO`` wraps the real thing
(``runtime.spawn``, ``runtime.probes``, ``host.portinfo``, ...); a simulation passes
fake processes and a fake port table instead, and runs the very same supervisor on a
virtual clock (anyio's sleeps and deadlines follow the event loop's clock, so a
virtual-time loop drives them; only the wall clock, used for the times people read,
is asked of the seam).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.to_thread
import psutil

from supervisord_lite.core.model import ProbeSpec, ServiceSpec, SupervisorSpec
from supervisord_lite.host import portinfo
from supervisord_lite.host.proctable import CTIME_TOLERANCE, read_proc_table
from supervisord_lite.host.recovery import DaemonState, write_state
from supervisord_lite.runtime import probes
from supervisord_lite.runtime.logs import ServiceLog
from supervisord_lite.runtime.service_process import adopt
from supervisord_lite.runtime.spawn import spawn


@dataclass(frozen=True, slots=True)
class Leftover:
    """A process of an instance still alive after its main process exited."""

    pid: int
    cmdline: str
    port: int | None  # the service's port, when this process listens on it
    ours: bool = True  # provably of the instance (its tree or marker); else only started after it


class ProcessHandle(Protocol):
    """One running instance of a service, as the lifecycle uses it (``ServiceProcess``)."""

    pid: int
    pgid: int
    create_time: float
    started_at: float
    env: dict[str, str]
    instance_id: str

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def on_exit(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """``callback`` from the event loop once the main process exited (no task waits
        for it); returns what cancels that, or None: then ``wait()`` in a task."""

    @property
    def output_open(self) -> bool:
        """Whether output of this instance may still be logged."""

    def close_output(self) -> None:
        """Stop logging its output (nobody supervises the service any more)."""

    def begin_stop(self, sig: signal.Signals) -> None: ...

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> int: ...

    def tree_pids(self) -> list[int]: ...


class ServiceLogLike(Protocol):
    def write_lines(self, lines: Any, when: float | None = None) -> None: ...

    def mark(self, text: str) -> None: ...

    def tail(self, n: int | None = None) -> list[str]: ...


class ServiceIO(Protocol):
    """What the lifecycle asks of the machine."""

    def wall_time(self) -> float:
        """Unix time, for what people read (started at, ready at, next retry)."""

    def random(self, service: str) -> random.Random:
        """The random source of one service's backoff jitter and probe spreading."""

    async def spawn(
        self,
        spec: ServiceSpec,
        *,
        instance_id: str,
        log: Any,
        task_group: anyio.abc.TaskGroup,
        on_line: Callable[[str], None] | None,
        extra_env: Mapping[str, str],
    ) -> ProcessHandle:
        """Start the service's command (raises ``SpawnError`` when it cannot run)."""

    def signal_group(self, proc: ProcessHandle, sig: signal.Signals) -> None:
        """``sig`` to the instance's process group (after its main process exited)."""

    def listening_ports(self) -> set[int]:
        """Every listening TCP port, in one cheap read."""

    def is_listening(self, port: int) -> bool:
        """Whether anything listens on TCP ``port`` (a read that does not grow with the other listeners)."""

    async def listener_on(self, port: int) -> portinfo.Listener | None:
        """Who listens on ``port``."""

    def owned_pids(self, procs: Sequence[ProcessHandle]) -> set[int]:
        """Every live pid of these processes' trees (one read of the process table for all)."""

    async def leftover(self, proc: ProcessHandle, port: int | None) -> Leftover | None:
        """A process of the instance's tree still alive after its main process exited:
        the one listening on ``port`` if any, else the oldest."""

    async def follow_pid_file(self, proc: ProcessHandle, path: Path, timeout: float) -> ProcessHandle | None:
        """The process named by ``path`` once the main process has exited (a program that
        daemonizes writes it), provided it belongs to the instance; None when no such pid
        shows up within ``timeout`` seconds."""

    async def wait_listening(self, port: int) -> None: ...

    async def wait_closed(self, port: int) -> None: ...

    async def tcp_probe(self, port: int, timeout: float) -> probes.ProbeResult: ...

    async def ports_listened_by(self, pid: int) -> set[int]:
        """The TCP ports a process tree listens on (for a reason, not a decision)."""
        ...

    async def probe(self, check: ProbeSpec, port: int | None, env: Mapping[str, str], cwd: Path) -> probes.ProbeResult: ...

    def tree_usage(self, roots: Mapping[str, int]) -> dict[str, Any]:
        """RSS and CPU of each ``{service: root pid}`` process tree."""

    def open_log(self, spec: ServiceSpec, supervisor: SupervisorSpec, on_error: Callable[[BaseException], None]) -> Any: ...

    async def write_state(self, path: Path, state: DaemonState) -> None: ...

    async def run(self) -> None:
        """Background work of the seam itself (the port watcher); runs until cancelled."""


def _read_pid(path: Path, written_after: float) -> int | None:
    """The pid in a pid file written after ``written_after`` (unix time), or None."""
    try:
        if path.stat().st_mtime < written_after - 1.0:
            return None  # left over from an earlier run
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 1 else None


def _started_after(pid: int, create_time: float) -> bool:
    try:
        return psutil.Process(pid).create_time() >= create_time - CTIME_TOLERANCE
    except psutil.Error:
        return False


def _adopt(pid: int, proc: ProcessHandle) -> ProcessHandle | None:
    try:
        create_time = psutil.Process(pid).create_time()
    except psutil.Error:
        return None
    return adopt(pid, create_time, proc.instance_id, name=getattr(proc, "name", ""), log=getattr(proc, "log", None))


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def _still_running(pid: int) -> bool:
    """Whether our child ``pid`` has not exited (its exit is left for its watcher to reap)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:  # not our child (adopted from an earlier daemon), or reaped already
        return False


#: The jitter of every real service (see ``RealServiceIO.random``).
_JITTER = random.Random()

#: How long a process left behind by an exited main process may take to open the
#: service's port before the failure reason is written without it.
LEFTOVER_LISTEN_GRACE = 1.0


class RealServiceIO:
    """The machine itself: real processes, the kernel's port table, real probes."""

    def __init__(self, port_watcher: probes.PortWatcher | None = None) -> None:
        self.port_watcher = port_watcher or probes.PortWatcher()
        self._listening = probes.ListeningPorts()
        self._main_pids: dict[int, int] = {}  # port -> the main process last spawned for it

    def wall_time(self) -> float:
        return time.time()

    def random(self, service: str) -> random.Random:
        """One generator for every service: jitter needs no stream of its own here (a
        Mersenne Twister is 2.5 KB per service); the simulation's IO gives each its own
        seeded one, for reproducible runs."""
        return _JITTER

    async def spawn(
        self,
        spec: ServiceSpec,
        *,
        instance_id: str,
        log: Any,
        task_group: anyio.abc.TaskGroup,
        on_line: Callable[[str], None] | None,
        extra_env: Mapping[str, str],
    ) -> ProcessHandle:
        proc = await spawn(spec, instance_id=instance_id, log=log, task_group=task_group, on_line=on_line, extra_env=extra_env)
        if spec.port is not None:
            self._main_pids[spec.port] = proc.pid
        return proc

    def signal_group(self, proc: ProcessHandle, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pgid, sig)

    def listening_ports(self) -> set[int]:
        return self._listening.read()

    def is_listening(self, port: int) -> bool:
        return port in self._listening.read_among((port,))

    async def listener_on(self, port: int) -> portinfo.Listener | None:
        return await anyio.to_thread.run_sync(portinfo.listener_on, port)

    def owned_pids(self, procs: Sequence[ProcessHandle]) -> set[int]:
        table = read_proc_table()
        return {pid for proc in procs for pid in proc.tree_pids(table)}  # type: ignore[call-arg]

    async def leftover(self, proc: ProcessHandle, port: int | None) -> Leftover | None:
        members = [p for p in await anyio.to_thread.run_sync(proc.tree_pids) if p != proc.pid]
        if members and port is not None and not self.is_listening(port):
            # a program that daemonizes exits as its child starts: give the child a moment
            # to open the port, so the reason can name the port it holds
            with anyio.move_on_after(LEFTOVER_LISTEN_GRACE):
                await self.wait_listening(port)
        if port is not None and self.is_listening(port):
            listener = await self.listener_on(port)
            if listener is not None and listener.pid is not None and listener.pid != proc.pid:
                if listener.pid in members:
                    return Leftover(listener.pid, listener.cmdline, port)
                if _started_after(listener.pid, proc.create_time):
                    # left the session and wiped its environment (redis does): not provably ours
                    return Leftover(listener.pid, listener.cmdline, port, ours=False)
        if not members:
            return None
        first = members[0]
        return Leftover(first, await anyio.to_thread.run_sync(_cmdline, first), None)

    async def follow_pid_file(self, proc: ProcessHandle, path: Path, timeout: float) -> ProcessHandle | None:
        with anyio.move_on_after(timeout):
            while True:
                pid = _read_pid(path, written_after=proc.create_time)
                if pid is not None and pid != proc.pid:
                    # only a process of this instance is taken: one of its tree, or one that
                    # started after its command did (a daemon that left the session and wiped
                    # its environment); a stale file may name a pid that is someone else's by now
                    members = await anyio.to_thread.run_sync(proc.tree_pids)
                    if pid in members or _started_after(pid, proc.create_time):
                        daemon = _adopt(pid, proc)
                        if daemon is not None:
                            return daemon
                await anyio.sleep(0.05)
        return None

    async def wait_listening(self, port: int) -> None:
        await self.port_watcher.wait_listening(port)

    async def wait_closed(self, port: int) -> None:
        await self.port_watcher.wait_closed(port)

    async def tcp_probe(self, port: int, timeout: float) -> probes.ProbeResult:
        """Readiness's connect, unless the socket-table read that just woke the wait for
        this port saw it on 127.0.0.1 or every address: the kernel would complete that
        connect whether or not the program accepts, so the read answers the question,
        without a connection the service has to handle (socat forks for each)."""
        read_took = self.port_watcher.seen_on_loopback(port)
        pid = self._main_pids.get(port)
        if read_took is not None and pid is not None and _still_running(pid):
            return probes.ProbeResult(True, read_took, f"127.0.0.1:{port} accepts connections")
        # its main process already exited (a program that put itself in the background): the
        # connect's round trips give the exit watcher its turn before the port counts as ready
        return await probes.tcp_probe(port, timeout=timeout)

    async def ports_listened_by(self, pid: int) -> set[int]:
        return await anyio.to_thread.run_sync(portinfo.ports_listened_by, pid)

    async def probe(self, check: ProbeSpec, port: int | None, env: Mapping[str, str], cwd: Path) -> probes.ProbeResult:
        return await probes.run_probe(check, port, env=env, cwd=cwd)

    def tree_usage(self, roots: Mapping[str, int]) -> dict[str, Any]:
        from supervisord_lite.runtime.resources import sample_trees

        return sample_trees(roots) if roots else {}

    def open_log(self, spec: ServiceSpec, supervisor: SupervisorSpec, on_error: Callable[[BaseException], None]) -> ServiceLog:
        return ServiceLog(
            supervisor.logs_dir / f"{spec.name}.log",
            max_bytes=supervisor.log_max_bytes,
            backups=supervisor.log_backups,
            tail_lines=50,  # failure reports show 20; the page reads the file
            on_error=on_error,
        )

    async def write_state(self, path: Path, state: DaemonState) -> None:
        # a rename can take milliseconds on some filesystems: not on the event loop
        await anyio.to_thread.run_sync(write_state, path, state)

    async def run(self) -> None:
        await self.port_watcher.run()
