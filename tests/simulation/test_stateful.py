"""Random sequences of everything people and the machine do to a platform, on random
manifests, against the real supervisor (fake processes, virtual clock).

Rules: up, down, restart (with and without dependents), reload (a changed, an added
and a removed service), a crash, a program that starts slowly or crashes or ignores
SIGTERM or daemonizes, a foreign process taking a port, time passing, the daemon
dying and a new one taking over. After every step, ``Sim.check`` holds the
invariants (see ``harness``): nothing spawns before what it depends on is ready, or
while nobody wants it, or twice; every `up` ends within its bound, settled; a `down`
leaves no process and no port; states agree with the world; an explicit up/restart
starts from a clean restart history.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from supervisord_lite.core import graph
from supervisord_lite.core.model import Backoff, Kind, Manifest, RestartPolicy, ServiceSpec
from tests.simulation.harness import Sim, manifest, service
from tests.simulation.vloop import VirtualTimeLoop
from tests.simulation.world import Program, World

TIERS = ["infra", "backend", "frontend"]
EXAMPLES = int(os.environ.get("SVC_SIM_EXAMPLES", "100"))  # about 3500 steps


def seconds(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def specs(draw: st.DrawFn) -> tuple[list[ServiceSpec], dict[str, int]]:
    tiers = {name: 10 * i for i, name in enumerate(TIERS[: draw(st.integers(1, 3))])}
    out: list[ServiceSpec] = []
    for i in range(draw(st.integers(1, 6))):
        tier = draw(st.sampled_from(sorted(tiers)))
        kind = draw(st.sampled_from([Kind.SERVICE] * 4 + [Kind.ONESHOT]))
        allowed = [s.name for s in out if tiers[s.tier] <= tiers[tier]]
        deps = draw(st.lists(st.sampled_from(allowed), unique=True, max_size=2)) if allowed else []
        port = 20000 + i if kind is Kind.SERVICE and draw(st.integers(0, 4)) else None
        first = draw(seconds(0.05, 1.0))
        fields = {
            "depends_on": tuple(deps),
            "start_limit": draw(st.integers(0, 3)),
            "start_limit_window": 1000.0,  # every crash loop here trips its start limit
            "backoff": Backoff(first=first, max=first * draw(st.integers(1, 8)), reset_after=30.0),
            "ready_timeout": draw(seconds(1.0, 5.0)),
            "failed_retry": draw(st.sampled_from([0.0, 600.0])),
            "stop_timeout": draw(seconds(0.5, 3.0)),
            "probe_interval": draw(seconds(0.5, 2.0)),
            "unhealthy_threshold": draw(st.integers(1, 3)),
        }
        if kind is Kind.SERVICE:
            fields["restart"] = draw(st.sampled_from(list(RestartPolicy)))
        out.append(service(f"s{i}", tier=tier, port=port, kind=kind, **fields))
    return out, tiers


def programs(spec: ServiceSpec) -> st.SearchStrategy[Program]:
    rt = spec.ready_timeout
    if spec.kind is Kind.ONESHOT:
        return st.builds(Program, ready_after=st.none(), exit_after=seconds(0.01, 0.8 * rt), exit_code=st.sampled_from([0, 0, 0, 1]))
    choices = [
        st.builds(Program, ready_after=seconds(0.01, 0.8 * rt)),  # healthy
        st.builds(Program, ready_after=st.none(), exit_after=seconds(0.01, 0.5), exit_code=st.sampled_from([1, 3])),  # crash loop
        st.builds(Program, ready_after=seconds(0.01, 0.3), exit_after=seconds(0.4, 3.0), exit_code=st.sampled_from([0, 1])),  # ready, then ends
        st.just(Program(ready_after=rt + 1.0)),  # slow: never ready in time
        st.builds(Program, ready_after=seconds(0.01, 0.5), term_delay=st.sampled_from([math.inf, 0.2, 4.0])),  # slow or stubborn stop
        st.just(Program(spawn_error="No such file or directory")),
    ]
    if spec.port is not None:
        choices.append(st.builds(Program, ready_after=st.sampled_from([None, 0.05]), exit_after=seconds(0.1, 0.4), daemonize=st.just(True)))
    return st.one_of(*choices)


class Lifecycle(RuleBasedStateMachine):
    steps_run = 0  # over every example: the figure the README gives (steps a second)

    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self.root = Path(tempfile.mkdtemp(prefix="svc-sim-"))
        self.sim: Sim | None = None
        self.added = 0

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def act(self, change) -> None:  # type: ignore[no-untyped-def]
        """Change the world at this virtual instant (inside the loop), then let the supervisor react."""
        assert self.sim is not None
        sim = self.sim

        async def inside() -> None:
            change()
            await sim.idle()

        self.run(inside())

    @property
    def m(self) -> Manifest:
        assert self.sim is not None
        return self.sim.manifest

    def names(self) -> list[str]:
        return [n for n, s in self.m.services.items() if s.is_active]

    @initialize(platform=specs(), seed=st.integers(0, 2**16), data=st.data())
    def start(self, platform: tuple[list[ServiceSpec], dict[str, int]], seed: int, data: st.DataObject) -> None:
        services, tiers = platform
        self.sim = Sim(manifest(self.root, services, tiers), World(seed))
        for spec in services:
            self.sim.world.programs[spec.name] = data.draw(programs(spec), label=f"program of {spec.name}")
        self.run(self.sim.start())

    def teardown(self) -> None:
        if self.sim is not None:
            self.run(self.sim.stop())
        self.loop.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def pick(self, data: st.DataObject, *, allow_all: bool = True) -> list[str] | None:
        names = self.names()
        strategy = st.lists(st.sampled_from(names), unique=True, min_size=1, max_size=3)
        if allow_all:
            strategy = st.none() | strategy
        return data.draw(strategy, label="names")

    @rule(data=st.data())
    def up(self, data: st.DataObject) -> None:
        assert self.sim is not None
        result = self.run(self.sim.up(self.pick(data)))
        assert not result["timed_out"], (result["unsettled"], self.sim.states(), {n: r.reason for n, r in self.sim.sup.runners.items()})  # type: ignore[union-attr]

    @rule(data=st.data())
    def down(self, data: st.DataObject) -> None:
        assert self.sim is not None
        self.run(self.sim.down(self.pick(data)))

    @rule(data=st.data(), restart_instead=st.booleans(), gap=st.sampled_from([0.0, 0.05, 0.5, 2.0]))
    def up_while_down_is_stopping(self, data: st.DataObject, restart_instead: bool, gap: float) -> None:
        assert self.sim is not None
        sim = self.sim
        stopped, started = self.pick(data), self.pick(data, allow_all=not restart_instead)

        async def then() -> None:
            result = await (sim.restart(started or []) if restart_instead else sim.up(started))
            assert not result["timed_out"], (result["unsettled"], sim.states())

        self.run(sim.down(stopped, then=then, gap=gap))

    @rule(data=st.data(), with_dependents=st.booleans())
    def restart(self, data: st.DataObject, with_dependents: bool) -> None:
        assert self.sim is not None
        names = self.pick(data, allow_all=False)
        assert names is not None
        result = self.run(self.sim.restart(names, with_dependents))
        assert not result["timed_out"], (result["unsettled"], self.sim.states())

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        assert self.sim is not None
        name = data.draw(st.sampled_from(self.names()))
        self.act(lambda: self.sim.world.kill(name))  # type: ignore[union-attr]

    @rule(data=st.data())
    def behave(self, data: st.DataObject) -> None:
        assert self.sim is not None
        name = data.draw(st.sampled_from(self.names()))
        self.sim.world.programs[name] = data.draw(programs(self.m.services[name]))

    @rule(data=st.data())
    def foreign_port(self, data: st.DataObject) -> None:
        assert self.sim is not None
        ports = [s.port for s in self.m.services.values() if s.port is not None]
        if not ports:
            return
        port = data.draw(st.sampled_from(ports))
        world = self.sim.world
        self.act(lambda: world.take_port(port) if port not in world.listeners else world.free_port(port))

    @rule(duration=st.sampled_from([0.1, 0.5, 2.0, 10.0, 60.0, 700.0]))
    def time_passes(self, duration: float) -> None:
        assert self.sim is not None
        self.run(self.sim.run_for(duration))

    @rule(data=st.data(), change=st.sampled_from(["changed", "added", "removed"]))
    def reload(self, data: st.DataObject, change: str) -> None:
        assert self.sim is not None
        services = dict(self.m.services)
        if change == "changed":
            name = data.draw(st.sampled_from(sorted(services)))
            services[name] = replace(services[name], command=(*services[name].command, "v2"))
        elif change == "added":
            self.added += 1
            name = f"new{self.added}"
            services[name] = service(name, tier=data.draw(st.sampled_from(sorted(self.m.tiers))), port=21000 + self.added)
        else:
            leaves = [n for n in services if not graph.dependents(self.m, n)]
            if len(services) < 2 or not leaves:
                return
            del services[data.draw(st.sampled_from(leaves))]
        new = manifest(self.root, services.values(), {t.name: t.order for t in self.m.tiers.values()})
        runners = self.sim.sup.runners  # type: ignore[union-attr]
        before = {n: (r.restarts, r.restarts_total) for n, r in runners.items()}
        self.run(self.sim.reload(new))
        after = self.sim.sup.runners  # type: ignore[union-attr]
        for name, (count, total) in before.items():  # a reload forgets no restart, nor lowers the metric
            if name in after and (after[name].restarts < count or after[name].restarts_total < total):
                self.sim.violations.append(f"reload lowered {name}'s restarts {count}/{total} to "
                                           f"{after[name].restarts}/{after[name].restarts_total}")

    @rule()
    def daemon_dies(self) -> None:
        assert self.sim is not None
        recorded = dict(self.sim.io.states[-1].restarts) if self.sim.io.states else {}
        self.run(self.sim.crash_daemon_and_restart())
        runners = self.sim.sup.runners  # type: ignore[union-attr]
        for name, count in recorded.items():  # the successor goes on from the recorded counts
            if name in runners and runners[name].restarts < count:
                self.sim.violations.append(f"a new daemon lowered {name}'s restarts {count} to {runners[name].restarts}")

    @invariant()
    def holds(self) -> None:
        if self.sim is not None and self.sim.sup is not None:
            Lifecycle.steps_run += 1
            self.run(self.sim.idle())
            self.sim.check()


Lifecycle.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no "explain": it traces every line
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLifecycle = Lifecycle.TestCase
