"""Liveness by the shared port sweep, on the real supervisor with fake processes and a
virtual clock: quietly listening services cost no per-service work at each sweep, and
a port that goes away is still found and handled on the same schedule as before."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from supervisord_lite.core.model import Backoff
from supervisord_lite.core.states import ServiceState
from supervisord_lite.daemon.metrics import Metrics
from supervisord_lite.runtime.runner import Runner
from tests.simulation import vloop
from tests.simulation.harness import Sim, manifest, service

S = ServiceState
INTERVAL = 2.0
THRESHOLD = 3


def simulate(body: Callable[[], Awaitable[None]]) -> None:
    vloop.run(body)


def api(**fields: Any) -> Any:
    fields.setdefault("probe_interval", INTERVAL)
    fields.setdefault("unhealthy_threshold", THRESHOLD)
    return service("api", port=8001, **fields)


class Counted:
    """Counts the table reads of the sweep and the results told to each runner."""

    def __init__(self, sim: Sim) -> None:
        self.reads = 0
        self.told: dict[str, int] = {}
        read = sim.io.listening_ports

        def counted_read() -> set[int]:
            self.reads += 1
            return read()

        sim.io.listening_ports = counted_read  # type: ignore[method-assign]
        original = Runner.port_swept

        def told(runner: Runner, listening: bool, latency: float) -> None:
            self.told[runner.spec.name] = self.told.get(runner.spec.name, 0) + 1
            original(runner, listening, latency)

        self._original = original
        Runner.port_swept = told  # type: ignore[method-assign]

    def close(self) -> None:
        Runner.port_swept = self._original  # type: ignore[method-assign]


def close_port(sim: Sim, name: str, port: int) -> None:
    """The service's process stays, but nothing listens on its port any more."""
    main = sim.world.main_of(name)
    assert main is not None and main.up
    sim.world.unlisten(port, main)
    main.up = False


def reopen_port(sim: Sim, name: str, port: int) -> None:
    main = sim.world.main_of(name)
    assert main is not None and not main.up
    main.become_up()


def spawns(sim: Sim, name: str) -> list[float]:
    return [t for t, s, _ in sim.world.spawns if s == name]


def test_a_quiet_service_is_not_told_each_sweep_and_its_closed_port_is_still_found(tmp_path: Path) -> None:
    m = manifest(tmp_path, [api(), service("web", port=8002, probe_interval=INTERVAL)])

    async def body() -> None:
        sim = Sim(m)
        counted = Counted(sim)
        try:
            await sim.start()
            assert (await sim.up())["all_ready"]
            await sim.run_for(3 * INTERVAL)
            told, reads = dict(counted.told), counted.reads
            await sim.run_for(10 * INTERVAL)
            assert counted.reads - reads >= 9  # the table is still read every interval ...
            assert counted.told == told  # ... but nobody is told "still listening"
            assert sim.state("api") is S.READY and sim.state("web") is S.READY

            closed_at = sim.world.now()
            close_port(sim, "api", 8001)
            await sim.world.until(lambda: len(spawns(sim, "api")) == 2)
            restarted_after = spawns(sim, "api")[1] - closed_at
            # THRESHOLD sweeps in a row found it gone: the first within an interval of the close
            assert (THRESHOLD - 1) * INTERVAL <= restarted_after <= THRESHOLD * INTERVAL + 0.1, restarted_after
            runner = sim.sup.runners["api"]  # type: ignore[union-attr]
            assert runner.restarts == 1
            assert any("port 8001 is not listening" in line for line in runner.log.tail())  # type: ignore[attr-defined]
            await sim.run_for(2 * INTERVAL)
            assert sim.state("api") is S.READY and sim.state("web") is S.READY
            assert counted.told.get("web") == told.get("web")  # its neighbour was never bothered
            sim.check()
            await sim.stop()
        finally:
            counted.close()

    simulate(body)


def test_a_port_gone_for_fewer_sweeps_than_the_threshold_is_forgiven_and_counted_afresh(tmp_path: Path) -> None:
    m = manifest(tmp_path, [api()])

    async def body() -> None:
        sim = Sim(m)
        await sim.start()
        assert (await sim.up())["all_ready"]
        await sim.run_for(5 * INTERVAL)
        runner = sim.sup.runners["api"]  # type: ignore[union-attr]

        close_port(sim, "api", 8001)
        await sim.run_for(1.5 * INTERVAL)  # one or two failing sweeps, fewer than THRESHOLD
        assert 1 <= runner._port_failures < THRESHOLD
        assert runner.snap.port_up is False
        reopen_port(sim, "api", 8001)
        await sim.run_for(1.5 * INTERVAL)
        assert runner._port_failures == 0 and runner.snap.port_up is True
        await sim.run_for(5 * INTERVAL)
        assert len(spawns(sim, "api")) == 1 and sim.state("api") is S.READY

        closed_at = sim.world.now()  # the failures count from zero again
        close_port(sim, "api", 8001)
        await sim.world.until(lambda: len(spawns(sim, "api")) == 2)
        assert (THRESHOLD - 1) * INTERVAL <= spawns(sim, "api")[1] - closed_at <= THRESHOLD * INTERVAL + 0.1
        sim.check()
        await sim.stop()

    simulate(body)


def test_the_backoff_still_resets_after_reset_after_seconds_ready(tmp_path: Path) -> None:
    reset_after = 10.0
    m = manifest(tmp_path, [api(backoff=Backoff(first=0.5, max=30.0, reset_after=reset_after))])

    async def body() -> None:
        sim = Sim(m)
        counted = Counted(sim)
        try:
            await sim.start()
            assert (await sim.up())["all_ready"]
            await sim.run_for(2 * INTERVAL)
            sim.world.kill("api")
            await sim.world.until(lambda: len(spawns(sim, "api")) == 2)
            await sim.run_for(1.0)
            runner = sim.sup.runners["api"]  # type: ignore[union-attr]
            assert sim.state("api") is S.READY and runner.history.backoff.attempts == 1
            told = counted.told.get("api", 0)
            await sim.run_for(reset_after / 2)
            assert counted.told["api"] > told  # told each sweep while the backoff waits for its reset
            assert runner.history.backoff.attempts == 1
            await sim.run_for(reset_after / 2 + 2 * INTERVAL)
            assert runner.history.backoff.attempts == 0  # stayed ready reset_after seconds
            told = counted.told["api"]
            await sim.run_for(10 * INTERVAL)
            assert counted.told["api"] == told  # quiet from then on
            sim.check()
            await sim.stop()
        finally:
            counted.close()

    simulate(body)


def test_the_probe_histogram_counts_every_sweep_of_a_quiet_service(tmp_path: Path) -> None:
    m = manifest(tmp_path, [api()])

    async def body() -> None:
        sim = Sim(m)
        counted = Counted(sim)
        try:
            await sim.start()
            assert sim.sup is not None
            metrics = Metrics(lambda: sim.sup.snapshot(with_usage=True), process_metrics=False)  # type: ignore[union-attr]
            sim.sup._observe_probe = metrics.observe_probe
            sim.sup.port_sweep.observe_with(metrics)
            assert (await sim.up())["all_ready"]
            reads = counted.reads  # readiness does not read the table here (FakeIO waits on the world)
            await sim.run_for(20 * INTERVAL)

            text = metrics.render()[0].decode()
            count = next(line for line in text.splitlines() if line.startswith("svc_port_probe_duration_seconds_count"))
            # the readiness probe, then one probe per read of the table
            assert count == f'svc_port_probe_duration_seconds_count{{service="api",port="8001"}} {1 + counted.reads - reads}'
            assert counted.reads - reads >= 19  # one probe of the service per read of the table
            assert counted.told["api"] <= 2  # almost all of them counted for the group at once

            snap = sim.sup.snapshot(with_usage=True).services[0]
            assert snap.probe_latency == sim.sup.port_sweep.steady_latency("api") is not None  # the last sweep's
            await sim.stop()
        finally:
            counted.close()

    simulate(body)
