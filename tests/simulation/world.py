"""A fake machine for the simulation: fake processes, a fake port table, fake probes.

``World`` holds what "really" happens: which fake processes live, who listens on
which port, every spawn in order. ``FakeIO`` is the ``ServiceIO`` seam the real
supervisor is given: it spawns ``FakeProcess`` objects that follow a ``Program``
(listen after a delay, exit with a code, ignore SIGTERM, daemonize), on the virtual
clock of ``vloop``. Nothing here touches the real machine.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import signal
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from supervisord_lite.core.model import ProbeSpec, ServiceSpec, SupervisorSpec
from supervisord_lite.host.portinfo import Listener
from supervisord_lite.host.recovery import DaemonState
from supervisord_lite.runtime.environment import SpawnError
from supervisord_lite.runtime.probes import ProbeResult
from supervisord_lite.runtime.service_process import call_as_asyncio
from supervisord_lite.runtime.serviceio import Leftover

EPOCH = 1_800_000_000.0  # the wall clock at virtual time 0


@dataclass(frozen=True)
class Program:
    """How one start of a fake service behaves (times in seconds after the spawn)."""

    ready_after: float | None = 0.05  # listens on its port (portless: counts as up) after this; None: never
    exit_after: float | None = None  # the main process exits after this; None: runs until stopped
    exit_code: int = 0
    term_delay: float = 0.0  # from SIGTERM to exit; math.inf: ignores SIGTERM (only SIGKILL ends it)
    daemonize: bool = False  # at exit_after, exits 0 leaving a child that listens on the port
    pid_file: Path | None = None  # where the daemonized child's pid is written
    spawn_error: str | None = None  # the command cannot run at all


HEALTHY = Program()


class Foreign:
    """A process that is not ours, holding a port."""

    def __init__(self, pid: int) -> None:
        self.pid = pid


class FakeProcess:
    """One fake process: a service's main process, or a child it left behind."""

    def __init__(self, world: World, service: str, instance_id: str, port: int | None, program: Program, parent: FakeProcess | None = None) -> None:
        self.world = world
        self.service = service
        self.instance_id = instance_id
        self.port = port
        self.program = program
        self.parent = parent
        self.main = parent is None  # the service's main process (or the daemon a pid file named)
        self.pid = world.new_pid()
        self.pgid = self.pid  # a service leads its own session; a daemonized child its own too
        self.born = world.now()  # virtual time
        self.create_time = self.started_at = world.wall()
        self.env: dict[str, str] = {}
        self.returncode: int | None = None
        self.up = False  # listening (or, without a port, started)
        self.signalled = False  # a stop has begun: it is being swept
        self.presignalled = False  # begin_stop sent the stop signal; stop() does not send it again
        self.children: list[FakeProcess] = []
        self._exited = asyncio.Event()
        self._timers: list[asyncio.TimerHandle] = []
        self._exit_callbacks: list[Callable[[], None]] = []
        self.output_open = False  # no output pump: nothing left to log at any time

    def __repr__(self) -> str:
        return f"<FakeProcess {self.service} pid={self.pid} rc={self.returncode}>"

    @property
    def alive(self) -> bool:
        return self.returncode is None

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        self._timers.append(asyncio.get_running_loop().call_later(delay, callback))

    def become_up(self) -> None:
        if not self.alive or self.up:
            return
        if self.port is not None:
            holder = self.world.listeners.get(self.port)
            if holder is not None and holder is not self:
                if isinstance(holder, FakeProcess):  # two instances of ours on one port
                    self.world.collisions.append((self.service, self.pid, holder.service, holder.pid))
                self.exit(1)
                return
            self.world.listen(self.port, self)
        self.up = True

    def finish(self) -> None:
        """The program's main process ends by itself."""
        if not self.alive:
            return
        if self.program.daemonize:
            child = FakeProcess(self.world, self.service, self.instance_id, self.port, Program(ready_after=None), parent=self)
            self.children.append(child)
            self.world.add(child)
            if self.program.pid_file is not None:
                self.world.pid_files[self.program.pid_file] = child.pid
            if self.up and self.port is not None:
                self.world.unlisten(self.port, self)
                self.up = False
            child.become_up()
            self.exit(0)
            return
        self.exit(self.program.exit_code)

    def exit(self, rc: int) -> None:
        if not self.alive:
            return
        self.returncode = rc
        for timer in self._timers:
            timer.cancel()
        if self.up and self.port is not None:
            self.world.unlisten(self.port, self)
        self.up = False
        self.world.gone(self)
        self._exited.set()
        loop = asyncio.get_running_loop()
        for callback in self._exit_callbacks:  # from the loop, as a pidfd reader's callback comes
            loop.call_soon(callback)
        self._exit_callbacks.clear()

    def deliver(self, sig: int) -> None:
        if not self.alive:
            return
        if sig == signal.SIGKILL:
            self.exit(-signal.SIGKILL)
            return
        delay = self.program.term_delay
        if math.isinf(delay):
            return
        if delay <= 0:
            self.exit(-sig)
        else:
            self.later(delay, lambda: self.exit(-sig))

    # -- what the supervisor uses (``ProcessHandle``) ---------------------------

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def on_exit(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        if not self.alive:
            return asyncio.get_running_loop().call_soon(call_as_asyncio, callback).cancel
        holder = [callback]

        def call() -> None:
            if holder:
                call_as_asyncio(holder.pop())

        self._exit_callbacks.append(call)
        return holder.clear

    def close_output(self) -> None:
        pass

    def members(self) -> list[FakeProcess]:
        return [p for p in (self, *self.children) if p.alive]

    def begin_stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        for p in self.members():
            if p.pgid == self.pgid:
                p.signalled = p.presignalled = True
                p.deliver(sig)

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> int:
        members = self.members()
        for p in members:
            p.signalled = True
            if not p.presignalled:  # begin_stop already sent it
                p.deliver(sig)
            p.presignalled = False
        with anyio.move_on_after(timeout):
            for p in members:
                await p._exited.wait()
        for p in self.members():
            p.exit(-signal.SIGKILL)
        return self.returncode if self.returncode is not None else -signal.SIGKILL

    def tree_pids(self) -> list[int]:
        return [p.pid for p in self.members()]


class World:
    """What really happens on the fake machine."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._pids = itertools.count(1000)
        self.listeners: dict[int, FakeProcess | Foreign] = {}
        self.alive: dict[int, FakeProcess] = {}
        self._by_service: dict[str, dict[int, FakeProcess]] = {}
        self.programs: dict[str, Program | list[Program]] = {}
        self.spawn_count: Counter[str] = Counter()
        self.spawns: list[tuple[float, str, int]] = []  # (virtual time, service, pid)
        self.collisions: list[tuple[str, int, str, int]] = []  # a process of ours could not bind: another of ours held the port
        self.exits: dict[str, list[tuple[float, int]]] = {}  # service -> (time, rc) of main processes
        self.on_spawn: list[Callable[[str], None]] = []
        self.foreign_at: dict[int, float] = {}  # port -> when a foreign process last took it
        self.pid_files: dict[Path, int] = {}  # pid files daemonized children wrote
        self._port_changed = asyncio.Event()

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return EPOCH + self.now()

    def new_pid(self) -> int:
        return next(self._pids)

    def program_for(self, service: str) -> Program:
        program = self.programs.get(service, HEALTHY)
        if isinstance(program, list):
            n = self.spawn_count[service]
            return program[min(n, len(program) - 1)]
        return program

    def add(self, proc: FakeProcess) -> None:
        self.alive[proc.pid] = proc
        self._by_service.setdefault(proc.service, {})[proc.pid] = proc

    def gone(self, proc: FakeProcess) -> None:
        self.alive.pop(proc.pid, None)
        self._by_service.get(proc.service, {}).pop(proc.pid, None)
        if proc.main:
            self.exits.setdefault(proc.service, []).append((self.now(), proc.returncode or 0))

    def listen(self, port: int, holder: FakeProcess | Foreign) -> None:
        self.listeners[port] = holder
        self._changed()

    def unlisten(self, port: int, holder: FakeProcess | Foreign) -> None:
        if self.listeners.get(port) is holder:
            del self.listeners[port]
            self._changed()

    def _changed(self) -> None:
        old, self._port_changed = self._port_changed, asyncio.Event()
        old.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._port_changed.wait()

    def processes_of(self, service: str) -> list[FakeProcess]:
        return list(self._by_service.get(service, {}).values())

    def main_of(self, service: str) -> FakeProcess | None:
        mains = [p for p in self.processes_of(service) if p.main]
        return mains[-1] if mains else None

    def take_port(self, port: int) -> Foreign:
        foreign = Foreign(self.new_pid())
        self.foreign_at[port] = self.now()
        self.listen(port, foreign)
        return foreign

    def free_port(self, port: int) -> None:
        holder = self.listeners.get(port)
        if isinstance(holder, Foreign):
            self.unlisten(port, holder)

    def kill(self, service: str) -> FakeProcess | None:
        """SIGKILL the service's main process (a crash from outside)."""
        main = self.main_of(service)
        if main is not None:
            main.exit(-signal.SIGKILL)
        return main


class FakeLog:
    def __init__(self) -> None:
        self._tail: deque[str] = deque(maxlen=50)
        self.closed = False

    def write_lines(self, lines: Iterable[str], when: float | None = None) -> None:
        self._tail.extend(lines)

    def write(self, line: str) -> None:
        self._tail.append(line)

    def mark(self, text: str) -> None:
        self._tail.append(f"--- svc: {text} ---")

    def tail(self, n: int | None = None) -> list[str]:
        lines = list(self._tail)
        return lines if n is None else lines[-n:] if n > 0 else []

    def close(self) -> None:
        """The runner closes its log when its task ends (a removed or replaced service)."""
        self.closed = True


class FakeIO:
    """The ``ServiceIO`` of the simulation: everything happens in ``world``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.states: list[DaemonState] = []  # every state file written

    def wall_time(self) -> float:
        return self.world.wall()

    def random(self, service: str) -> random.Random:
        return random.Random(f"{self.world.seed}:{service}")

    async def spawn(self, spec: ServiceSpec, *, instance_id: str, log: Any, task_group: Any, on_line: Any, extra_env: Mapping[str, str]) -> FakeProcess:
        world = self.world
        program = world.program_for(spec.name)
        if program.spawn_error:
            raise SpawnError(f"{spec.name}: cannot run {spec.command[0]!r}: {program.spawn_error}")
        for hook in world.on_spawn:
            hook(spec.name)
        proc = FakeProcess(world, spec.name, instance_id, spec.port, program)
        world.add(proc)
        world.spawn_count[spec.name] += 1
        world.spawns.append((world.now(), spec.name, proc.pid))
        if program.ready_after is not None:
            proc.later(program.ready_after, proc.become_up)
        if program.exit_after is not None:
            proc.later(program.exit_after, proc.finish)
        await anyio.sleep(0)
        return proc

    def signal_group(self, proc: Any, sig: signal.Signals) -> None:
        for p in proc.members():
            if p.pgid == proc.pgid:
                p.deliver(sig)

    def listening_ports(self) -> set[int]:
        return set(self.world.listeners)

    def is_listening(self, port: int) -> bool:
        return port in self.world.listeners

    def owned_pids(self, procs: Any) -> set[int]:
        return {pid for proc in procs for pid in proc.tree_pids()}

    async def listener_on(self, port: int) -> Listener | None:
        holder = self.world.listeners.get(port)
        if holder is None:
            return None
        if isinstance(holder, Foreign):
            return Listener(port=port, pid=holder.pid, user="someone", cmdline="foreign-server")
        return Listener(port=port, pid=holder.pid, user="sim", cmdline=f"fake {holder.service}")

    async def leftover(self, proc: Any, port: int | None) -> Leftover | None:
        children = [c for c in proc.children if c.alive]
        if not children:
            return None
        for child in children:
            if port is not None and self.world.listeners.get(port) is child:
                return Leftover(child.pid, f"fake {child.service} (daemonized)", port)
        return Leftover(children[0].pid, f"fake {children[0].service} (daemonized)", None)

    async def follow_pid_file(self, proc: Any, path: Path, timeout: float) -> Any:
        children = [c for c in proc.children if c.alive and self.world.pid_files.get(path) == c.pid]
        if not children:
            return None
        children[0].main = True
        return children[0]

    async def wait_listening(self, port: int) -> None:
        await self.world.until(lambda: port in self.world.listeners)

    async def wait_closed(self, port: int) -> None:
        await self.world.until(lambda: port not in self.world.listeners)

    async def tcp_probe(self, port: int, timeout: float) -> ProbeResult:
        ok = port in self.world.listeners
        return ProbeResult(ok, 0.0001, f"127.0.0.1:{port} accepts connections" if ok else f"127.0.0.1:{port}: connection refused")

    async def ports_listened_by(self, pid: int) -> set[int]:
        return set()  # fake processes listen only on their declared port

    async def probe(self, check: ProbeSpec, port: int | None, env: Mapping[str, str], cwd: Path) -> ProbeResult:
        if port is None:
            return ProbeResult(True, 0.0001, "nothing to check")
        return await self.tcp_probe(port, check.timeout)

    def tree_usage(self, roots: Mapping[str, int]) -> dict[str, Any]:
        return {}

    def open_log(self, spec: ServiceSpec, supervisor: SupervisorSpec, on_error: Any) -> FakeLog:
        return FakeLog()

    async def write_state(self, path: Path, state: DaemonState) -> None:
        self.states.append(state)

    async def run(self) -> None:
        await anyio.sleep_forever()
