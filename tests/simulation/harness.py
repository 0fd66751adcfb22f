"""The real supervisor and the daemon's control operations, on the fake world and a virtual clock.

``Sim`` runs ``runtime.supervisor.Supervisor`` with ``FakeIO`` and drives it through
``daemon.main.Daemon`` (the very `up`/`down`/`restart` operations the control socket
serves), keeps a model of what people asked for, and checks the lifecycle's
invariants:

- at every spawn: the service is wanted; no other instance of it lives (a main process,
  or a process of ours on its port); everything it depends on is ready (a one-shot: exited 0), in the world and in the supervisor; its
  tier barrier is open;
- after every operation: an `up` ended within its bound; a `down` left no process and
  no port; every state agrees with the world; no runner hit an internal error;
- an explicit `up`/`restart` starts from a clean restart history.

Violations are collected (an exception inside a spawn would only become the runner's
"internal error") and ``check()`` raises them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio

from supervisord_lite.core import graph
from supervisord_lite.core.model import (
    Backoff,
    Kind,
    Manifest,
    ProbeSpec,
    RestartPolicy,
    ServiceSpec,
    SupervisorSpec,
    Tier,
)
from supervisord_lite.core.startgate import satisfies
from supervisord_lite.core.states import ServiceState
from supervisord_lite.daemon.main import Daemon
from supervisord_lite.runtime.supervisor import Supervisor
from tests.simulation.vloop import VirtualTimeLoop
from tests.simulation.world import FakeIO, World

S = ServiceState
#: States in which a process of the service may live.
LIVE_STATES = {S.STARTING, S.READY, S.UNHEALTHY, S.STOPPING}
SLACK = 1.0  # virtual seconds an `up` may run past its bound (the last heartbeat)


def service(name: str, *, tier: str = "default", port: int | None = None, **fields: Any) -> ServiceSpec:
    """A ServiceSpec as the loader would build it (readiness: the port, when there is one)."""
    kind = fields.pop("kind", Kind.SERVICE)
    defaults: dict[str, Any] = {
        "ready": ProbeSpec(tcp=port is not None),
        "restart": RestartPolicy.NO if kind is Kind.ONESHOT else RestartPolicy.ON_FAILURE,
        "backoff": Backoff(first=0.5, max=30.0, reset_after=30.0),
    }
    defaults.update(fields)
    return ServiceSpec(name=name, tier=tier, command=("fake", name), port=port, kind=kind, **defaults)


def manifest(root: Path, services: Iterable[ServiceSpec], tiers: dict[str, int] | None = None) -> Manifest:
    tiers = tiers or {"default": 0}
    return Manifest(
        path=root / "svc.toml",
        supervisor=SupervisorSpec(name="sim", state_dir=root / ".svc", metrics=""),
        tiers={name: Tier(name, order) for name, order in tiers.items()},
        services={s.name: s for s in services},
    )


class Sim:
    """One simulated daemon (and its successors) over one fake world."""

    def __init__(self, manifest: Manifest, world: World | None = None) -> None:
        self.manifest = manifest
        self.world = world or World()
        self.io = FakeIO(self.world)
        self.wanted: set[str] = set()  # the model: what people asked to run
        self.violations: list[str] = []
        self.ups: list[dict[str, Any]] = []  # every `up`/`restart` result, with its duration
        self.world.on_spawn.append(self._check_spawn)
        self.sup: Supervisor | None = None
        self.daemon: Daemon | None = None
        self._task: asyncio.Task[None] | None = None

    # -------------------------------------------------------------- the daemon

    async def start(self, resume: Iterable[str] = (), restarts: dict[str, int] | None = None) -> None:
        self.sup = Supervisor(self.manifest, io=self.io)
        self.sup.carry_restarts(restarts or {})  # as the daemon does with its predecessor's counts
        self.daemon = Daemon(self.manifest.path, self.sup)
        self._task = asyncio.get_running_loop().create_task(self.sup.run())
        await self.idle()
        resume = list(resume)
        if resume:
            self.wanted |= set(graph.start_set(self.manifest, resume))
            self.sup.up(resume)

    async def crash_daemon_and_restart(self) -> None:
        """The daemon dies (its processes survive); a new one stops the survivors, then
        starts what the old one last recorded as wanted."""
        assert self._task is not None and self.sup is not None
        recorded = self.io.states[-1].wanted if self.io.states else ()
        counts = dict(self.io.states[-1].restarts) if self.io.states else {}
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        survivors = list(self.world.alive.values())
        for proc in survivors:  # what reap_predecessor does: SIGTERM, SIGKILL after stop_timeout
            spec = self.manifest.services.get(proc.service)
            await proc.stop(timeout=spec.stop_timeout if spec else 10.0)
        self.wanted = set()
        await self.start(resume=[n for n in recorded if n in self.manifest.services and self.manifest.services[n].is_active],
                         restarts={n: c for n, c in counts.items() if n in self.manifest.services})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def idle(self) -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        await loop.idle()

    async def run_for(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        await self.idle()

    async def _op(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        assert self.daemon is not None
        last: dict[str, Any] = {}
        async for message in self.daemon.handle(op, args):
            last = message
        assert last.get("done") and last.get("ok"), last
        return last["result"]

    # -------------------------------------------------------------- operations people run

    async def up(self, names: list[str] | None = None, timeout: float | None = None) -> dict[str, Any]:
        assert self.sup is not None
        start_set = graph.start_set(self.manifest, names)
        self.wanted |= set(start_set)
        args: dict[str, Any] = {"names": names or []}
        if timeout is not None:
            args["timeout"] = timeout
        bound = timeout if timeout is not None else self.sup.settle_budget(start_set)
        return await self._timed("up", args, bound, start_set, names if names else start_set)

    async def restart(self, names: list[str], with_dependents: bool = False) -> dict[str, Any]:
        assert self.sup is not None
        named = set(names)
        if with_dependents:
            named |= {d for n in names for d in graph.dependents(self.manifest, n)}
        closure = graph.start_set(self.manifest, sorted(named))
        self.wanted |= set(closure)
        bound = self.sup.settle_budget(closure)
        return await self._timed("restart", {"names": names, "dependents": with_dependents}, bound, closure, sorted(named))

    async def _timed(self, op: str, args: dict[str, Any], bound: float, start_set: list[str], named: Iterable[str]) -> dict[str, Any]:
        assert self.sup is not None
        sup = self.sup
        named = [n for n in named if self.manifest.services[n].is_active]
        original = sup.up if op == "up" else sup.restart

        def checked(*a: Any, **kw: Any) -> Any:
            result = original(*a, **kw)
            for name in named:  # an explicit up/restart starts from a clean history
                if not sup.runners[name].history.is_clean:
                    self.violations.append(f"{op} {name}: restart history not cleared")
            return result

        setattr(sup, op, checked)
        began = anyio.current_time()
        try:
            with anyio.fail_after(bound + SLACK + 5):
                result = await self._op(op, args)
        finally:
            setattr(sup, op, original)
        took = anyio.current_time() - began
        if took > bound + SLACK:
            self.violations.append(f"{op} {args} took {took:.1f}s, over its bound {bound:.1f}s")
        result = dict(result, took=took, bound=bound, op=op, args=args)
        self.ups.append(result)
        await self.idle()
        return result

    async def down(self, names: list[str] | None = None, *, then: Any = None, gap: float = 0.0) -> dict[str, Any]:
        """`svc down`; ``then``, when given, is another operation (a coroutine function)
        run while this one is still stopping: the last command wins."""
        plan = graph.stop_plan(self.manifest, names)
        members = {n for step in plan for n in step}
        self.wanted -= members
        task = asyncio.get_running_loop().create_task(self._op("down", {"names": names or []}))
        taken_back: set[str] = set()
        if then is not None:
            await anyio.sleep(gap)
            before = set(self.wanted)
            await then()
            taken_back = self.wanted - before
        result = await task
        taken_over, stopped = set(result["taken_over"]), set(result["stopped"])
        if not taken_over <= members & taken_back or taken_over & stopped:
            # it names only what the later command claimed of this down's, and never one it stopped
            self.violations.append(f"down {names}: taken over {sorted(taken_over)}, stopped {sorted(stopped)}, "
                                   f"the later command took {sorted(members & taken_back)}")
        for name in members - taken_back:  # a down leaves no process and no port
            spec = self.manifest.services[name]
            left = [p for p in self.world.processes_of(name)]
            if left:
                self.violations.append(f"down {names}: {name} still has {left}")
            holder = self.world.listeners.get(spec.port) if spec.port is not None else None
            if holder is not None and getattr(holder, "service", None) is not None:
                self.violations.append(f"down {names}: port {spec.port} of {name} still held by {holder}")
        await self.idle()
        return result

    async def reload(self, new: Manifest) -> dict[str, list[str]]:
        assert self.sup is not None
        platform_up = bool(self.wanted)
        result = await self.sup.reload(new)
        self.wanted -= set(result["removed"])
        self.manifest = new
        if platform_up:
            self.wanted |= {n for n in result["added"] if new.services[n].is_active}
        for name in result["changed"]:
            if not new.services[name].is_active:
                self.wanted.discard(name)
        await self.idle()
        return result

    # -------------------------------------------------------------- invariants

    def _check_spawn(self, name: str) -> None:
        sup, world = self.sup, self.world
        assert sup is not None
        runner = sup.runners.get(name)
        if name not in self.wanted or runner is None or not runner.wanted:
            self.violations.append(f"{name} spawned while nobody wants it")
        spec = self.manifest.services[name]
        # another instance: a main process, or any process of ours on the port; what escaped a
        # crashed instance's group is swept once its successor is spawned (test_flows checks when)
        others = [p for p in world.processes_of(name) if p.main or (spec.port is not None and world.listeners.get(spec.port) is p)]
        if others:
            self.violations.append(f"{name} spawned while {others} still live: two instances")
        for dep in spec.depends_on:
            dep_spec = self.manifest.services[dep]
            dep_runner = sup.runners[dep]
            if not satisfies(dep_runner.state, dep_runner.kind, restarting=dep_runner.restarting):
                self.violations.append(f"{name} spawned while its dependency {dep} is {dep_runner.state.value}")
            if dep_spec.kind is Kind.ONESHOT:
                exits = world.exits.get(dep, [])
                last_spawn = max((t for t, s, _ in world.spawns if s == dep), default=None)
                if world.processes_of(dep) or not exits or exits[-1][1] != 0 or last_spawn is None or exits[-1][0] < last_spawn:
                    self.violations.append(f"{name} spawned before its one-shot {dep} exited 0")
            else:
                main = world.main_of(dep)
                died_now = bool(world.exits.get(dep)) and world.exits[dep][-1][0] == world.now()
                if died_now:
                    continue  # it died at this very instant: nobody could know yet
                if main is not None and not main.up and self._fooled(dep_spec.port, main):
                    continue
                if main is None or (dep_spec.port is not None and world.listeners.get(dep_spec.port) is not main):
                    self.violations.append(f"{name} spawned while its dependency {dep} is not up in the world ({main})")
        gate = runner.gate if runner is not None else None
        if gate is not None and not gate.is_open_for(runner.order):  # type: ignore[union-attr]
            self.violations.append(f"{name} spawned before the earlier tiers of its up settled")

    def _fooled(self, port: int | None, main: Any) -> bool:
        """A foreign process took the port after ``main`` started and before it bound it: a
        readiness probe cannot tell the two apart (the real supervisor cannot either)."""
        return port is not None and self.world.foreign_at.get(port, -1.0) >= main.born

    def check(self) -> None:
        """The states agree with the world; nothing hit an internal error; no violation so far."""
        sup = self.sup
        assert sup is not None
        for name, runner in sup.runners.items():
            if runner.reason.startswith("internal error"):
                self.violations.append(f"{name}: {runner.reason}")
            live = [p for p in self.world.processes_of(name) if not p.signalled]
            if runner.state not in LIVE_STATES and live:
                self.violations.append(f"{name} is {runner.state.value} but {live} live")
            if runner.state is S.READY:
                main = self.world.main_of(name)
                port = runner.spec.port
                holder = self.world.listeners.get(port) if port is not None else None
                if main is not None and not main.up and self._fooled(port, main):
                    continue
                if main is None or (port is not None and holder is not main):
                    self.violations.append(f"{name} is ready but not up in the world ({main})")
        if self.world.collisions:
            self.violations.append(f"two processes of ours collided on a port: {self.world.collisions}")
        if self.violations:
            raise AssertionError("\n".join(self.violations))

    def state(self, name: str) -> ServiceState:
        assert self.sup is not None
        return self.sup.runners[name].state

    def states(self) -> dict[str, str]:
        assert self.sup is not None
        return {n: r.state.value for n, r in self.sup.runners.items()}
