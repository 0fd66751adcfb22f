"""Scripted scenarios of the lifecycle, on the real supervisor with fake processes and a
virtual clock: each flow that once went wrong with real software, replayed exactly."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any
from pathlib import Path

import pytest

from supervisord_lite.core.model import Backoff, Kind, RestartPolicy
from supervisord_lite.core.states import ServiceState
from tests.simulation import vloop
from tests.simulation.harness import Sim, manifest, service
from tests.simulation.world import FakeProcess, Program

S = ServiceState
CRASH = Program(ready_after=None, exit_after=0.3, exit_code=3)  # uvicorn with a typo in its module name


def simulate(body: Callable[[], Awaitable[None]]) -> None:
    vloop.run(body)


def spawn_times(sim: Sim, name: str) -> list[float]:
    return [t for t, s, _ in sim.world.spawns if s == name]


# ---------------------------------------------------------------- flow 1: a crash loop


def test_crash_loop_fails_at_the_start_limit_every_time_and_up_ends(tmp_path: Path) -> None:
    m = manifest(tmp_path, [service("billing-api", port=8001)])

    async def body() -> None:
        sim = Sim(m)
        sim.world.programs["billing-api"] = CRASH
        await sim.start()
        first = await sim.up()
        assert first["all_ready"] is False and first["timed_out"] is False
        assert sim.state("billing-api") is S.FAILED
        assert "start_limit" in sim.sup.runners["billing-api"].reason  # type: ignore[union-attr]
        spawns = spawn_times(sim, "billing-api")
        assert len(spawns) == 6  # the first start and start_limit (5) restarts

        await sim.down(["billing-api"])
        before = len(sim.world.spawns)
        second = await sim.up()
        again = spawn_times(sim, "billing-api")[len(spawns):]
        assert sim.state("billing-api") is S.FAILED and second["timed_out"] is False
        assert len(again) == 6, again  # the start limit counts from zero again
        # the first restart waits backoff.first (0.5 s) after the crash (0.3 s after the spawn)
        assert again[1] - again[0] == pytest.approx(0.3 + 0.5, abs=0.01)
        # within the same budget as the first time: the backoff steps (0.5 + 1 + 2 + 4 + 8 s) and six 0.3 s attempts
        assert first["took"] <= 15.5 + 6 * 0.3 + 0.1 and second["took"] <= 15.5 + 6 * 0.3 + 0.1
        assert len(sim.world.spawns) - before == 6

        # and an `up` of the failed service, without a down, starts from a clean history too
        third = await sim.up(["billing-api"])
        assert len(spawn_times(sim, "billing-api")) == 18 and third["took"] <= 15.5 + 6 * 0.3 + 0.1
        sim.check()
        await sim.stop()

    simulate(body)


def test_up_of_a_service_in_backoff_retries_at_once(tmp_path: Path) -> None:
    m = manifest(tmp_path, [service("api", port=8001, backoff=Backoff(first=20, max=60), start_limit=3)])

    async def body() -> None:
        sim = Sim(m)
        sim.world.programs["api"] = [CRASH, CRASH, Program()]
        await sim.start()
        assert sim.sup is not None
        sim.sup.up(None)
        sim.wanted.add("api")
        await sim.run_for(1.0)
        assert sim.state("api") is S.BACKOFF  # waiting 20 s after the first crash
        result = await sim.up(["api"])  # cuts the wait short: second attempt at once, crashes, backs off 20 s again
        assert spawn_times(sim, "api")[1] == pytest.approx(1.0, abs=0.01)
        assert result["all_ready"] is True  # the third attempt (after the second 20 s wait) is healthy
        sim.check()
        await sim.stop()

    simulate(body)


def test_a_crash_loop_slower_than_its_start_limit_window_is_cut_by_the_up_timeout(tmp_path: Path) -> None:
    m = manifest(tmp_path, [service("slowcrash", port=8001, start_limit=2, start_limit_window=5, ready_timeout=30), service("web", port=8002)])

    async def body() -> None:
        sim = Sim(m)
        sim.world.programs["slowcrash"] = Program(ready_after=None, exit_after=10, exit_code=1)  # never trips a 5 s window
        await sim.start()
        result = await sim.up(timeout=45)
        assert result["timed_out"] is True and result["unsettled"] == ["slowcrash"]
        assert result["took"] == pytest.approx(45, abs=1.0)
        shown = {s["name"]: s for s in result["services"]}
        assert shown["slowcrash"]["state"] in ("starting", "backoff", "waiting") and shown["web"]["state"] == "ready"
        # without --timeout the bound comes from the manifest and still ends the wait
        await sim.down()
        result = await sim.up()
        assert result["timed_out"] is True and result["took"] <= result["bound"] + 1.0
        sim.check()
        await sim.stop()

    simulate(body)


# ---------------------------------------------------------------- flow 2: unrelated services


def bizosaas(tmp_path: Path) -> object:
    return manifest(
        tmp_path,
        [
            service("postgres", tier="infra", port=5432),
            service("billing-api", tier="backend", port=8001, depends_on=("postgres",)),
            service("invoices", tier="backend", port=8002, depends_on=("billing-api",)),
            service("client-portal", tier="frontend", port=3000, depends_on=("postgres",)),
            service("prometheus", tier="frontend", port=9090),
        ],
        {"infra": 0, "backend": 1, "frontend": 2},
    )


def test_a_failed_backend_blocks_exactly_what_depends_on_it(tmp_path: Path) -> None:
    m = bizosaas(tmp_path)

    async def body() -> None:
        sim = Sim(m)  # type: ignore[arg-type]
        sim.world.programs["billing-api"] = CRASH
        await sim.start()
        result = await sim.up()
        states = sim.states()
        assert states == {
            "postgres": "ready", "billing-api": "failed", "invoices": "waiting",
            "client-portal": "ready", "prometheus": "ready",
        }
        assert result["all_ready"] is False and result["timed_out"] is False
        invoices = sim.sup.runners["invoices"]  # type: ignore[union-attr]
        assert invoices.blocked_by == ("billing-api",) and invoices.reason.startswith("waiting for billing-api (failed: ")
        # tier order is a start order: the frontend started once the backend tier had settled
        failed_at = sim.world.exits["billing-api"][-1][0]
        assert min(spawn_times(sim, "client-portal") + spawn_times(sim, "prometheus")) >= failed_at
        sim.check()
        await sim.stop()

    simulate(body)


def test_up_of_an_unrelated_service_does_not_wait_for_a_stopped_one(tmp_path: Path) -> None:
    m = bizosaas(tmp_path)

    async def body() -> None:
        sim = Sim(m)  # type: ignore[arg-type]
        sim.world.programs["billing-api"] = Program(ready_after=None)  # hangs in starting
        sim.world.programs["postgres"] = Program(ready_after=1.0)
        await sim.start()
        assert sim.sup is not None
        sim.sup.up(None)  # `svc up --no-wait`: the frontend waits for the backend tier
        sim.wanted |= set(m.services)  # type: ignore[attr-defined]
        await sim.run_for(2.0)
        assert sim.state("client-portal") is S.WAITING and sim.state("billing-api") is S.STARTING
        await sim.down(["billing-api"])  # no longer wanted: settled, the tier barrier opens
        await sim.run_for(0.5)
        assert sim.state("client-portal") is S.READY and sim.state("prometheus") is S.READY
        result = await sim.up(["client-portal"])
        assert result["all_ready"] is True and result["took"] < 1.0
        sim.check()
        await sim.stop()

    simulate(body)


def test_a_new_up_replaces_the_tier_barrier_of_an_earlier_one(tmp_path: Path) -> None:
    m = bizosaas(tmp_path)

    async def body() -> None:
        sim = Sim(m)  # type: ignore[arg-type]
        sim.world.programs["billing-api"] = Program(ready_after=None)  # starting until ready_timeout (30 s)
        await sim.start()
        assert sim.sup is not None
        sim.sup.up(None)
        sim.wanted |= set(m.services)  # type: ignore[attr-defined]
        await sim.run_for(1.0)
        assert sim.state("prometheus") is S.WAITING
        assert sim.sup.runners["prometheus"].reason == "waiting for the earlier tiers of this up to settle"
        result = await sim.up(["prometheus"])  # the last word: it needs nothing, so it starts now
        assert result["all_ready"] is True and result["took"] < 1.0
        sim.check()
        await sim.stop()

    simulate(body)


def test_a_tier_barrier_once_passed_does_not_hold_a_later_tier_back_again(tmp_path: Path) -> None:
    m = bizosaas(tmp_path)

    async def body() -> None:
        sim = Sim(m)  # type: ignore[arg-type]
        await sim.start()
        assert (await sim.up())["all_ready"]
        sim.world.programs["billing-api"] = Program(ready_after=5.0)  # comes back slowly
        sim.world.kill("billing-api")
        sim.world.kill("prometheus")
        await sim.run_for(1.0)
        assert sim.state("billing-api") is S.STARTING and sim.state("prometheus") is S.READY
        sim.check()
        await sim.stop()

    simulate(body)


def test_an_up_while_a_down_is_stopping_starts_a_service_that_restarted_while_waiting_its_turn(tmp_path: Path) -> None:
    """Found by the state machine: `down` releases the infra service at once but stops it
    only after the stubborn backend one. Meanwhile it exits 0 and, out of backoff, parks
    in `waiting` for its turn to stop. An `up` then wants it again before that turn: it
    must start from there, or it stays `waiting` and holds the whole `up` at its barrier."""
    policy = {"restart": RestartPolicy.ALWAYS, "ready_timeout": 1.0, "backoff": Backoff(first=0.1, max=0.1, reset_after=30.0)}
    m = manifest(
        tmp_path,
        [
            service("stubborn", tier="backend", stop_timeout=5.0, **policy),
            service("brief", tier="infra", **policy),
            service("web", tier="backend", port=20004, **policy),
        ],
        {"infra": 0, "backend": 10},
    )

    async def body() -> None:
        sim = Sim(m)
        sim.world.programs["stubborn"] = Program(ready_after=0.5, term_delay=math.inf)  # killed at stop_timeout
        sim.world.programs["brief"] = Program(ready_after=0.25, exit_after=1.0, exit_code=0)
        await sim.start()
        assert (await sim.up())["all_ready"] is True

        async def up_again() -> None:
            assert sim.state("stubborn") is S.STOPPING and sim.state("brief") is S.WAITING
            assert not sim.sup.runners["brief"].wanted  # type: ignore[union-attr]
            result = await sim.up()
            assert result["timed_out"] is False, (result["unsettled"], sim.states())
            assert result["all_ready"] is True, sim.states()

        await sim.down(then=up_again, gap=2.0)
        assert {n: sim.state(n) for n in m.services} == {n: S.READY for n in m.services}
        sim.check()
        await sim.stop()

    simulate(body)


# ---------------------------------------------------------------- flow 3: restart with dependents


def test_restart_with_dependents_stops_them_first_and_starts_them_once_it_is_ready_again(tmp_path: Path) -> None:
    m = manifest(
        tmp_path,
        [
            service("postgres", tier="infra", port=5432, stop_timeout=5),
            service("pg-check", tier="app", kind=Kind.ONESHOT, depends_on=("postgres",)),
            service("migrate", tier="app", kind=Kind.ONESHOT, depends_on=("pg-check",)),
            service("web", tier="app", port=8000, depends_on=("migrate",)),
            service("worker", tier="app", depends_on=("postgres",)),
        ],
        {"infra": 0, "app": 1},
    )

    async def body() -> None:
        sim = Sim(m)
        for task in ("pg-check", "migrate"):
            sim.world.programs[task] = Program(ready_after=None, exit_after=0.2)
        sim.world.programs["postgres"] = Program(ready_after=1.5, term_delay=2.0)  # slow to stop and to start
        await sim.start()
        assert (await sim.up())["all_ready"]
        spawned = len(sim.world.spawns)
        old = {name: sim.world.main_of(name) for name in ("postgres", "web", "worker")}
        result = await sim.restart(["postgres"], with_dependents=True)
        assert result["all_ready"] is True, result
        assert sim.states() == {"postgres": "ready", "pg-check": "exited", "migrate": "exited", "web": "ready", "worker": "ready"}
        new = sim.world.spawns[spawned:]
        assert [s for _, s, _ in new].count("pg-check") == 1 and [s for _, s, _ in new].count("migrate") == 1
        postgres_spawn = next(t for t, s, _ in new if s == "postgres")
        assert all(t >= postgres_spawn + 1.5 for t, s, _ in new if s != "postgres")  # after it is ready again
        # the dependents' old processes were gone before postgres was signalled (it takes 2 s to stop)
        pg_exit = next(t for t, rc in sim.world.exits["postgres"] if rc != 0)
        for name in ("web", "worker"):
            assert old[name] is not None and not old[name].alive  # type: ignore[union-attr]
            assert sim.world.exits[name][0][0] <= pg_exit - 2.0 + 1e-6
        sim.check()
        await sim.stop()

    simulate(body)


def test_restart_without_dependents_leaves_them_running(tmp_path: Path) -> None:
    m = manifest(tmp_path, [service("db", port=5432), service("api", port=8000, depends_on=("db",))])

    async def body() -> None:
        sim = Sim(m)
        await sim.start()
        await sim.up()
        api = sim.world.main_of("api")
        result = await sim.restart(["db"])
        assert result["all_ready"] and sim.world.main_of("api") is api and api is not None and api.alive
        sim.check()
        await sim.stop()

    simulate(body)


# ---------------------------------------------------------------- flow 6: linear cost


def _publishes(tmp_path: Path, n: int, tiers: int) -> tuple[int, float]:
    names = {f"t{i}": i for i in range(tiers)}
    specs = [service(f"s{i}", tier=f"t{i % tiers}", port=20000 + i) for i in range(n)]
    m = manifest(tmp_path / f"{n}-{tiers}", specs, names)
    counted = [0]

    async def body() -> None:
        sim = Sim(m)
        await sim.start()
        assert sim.sup is not None
        changed = sim.sup.changed

        def counting(runner: object, *, settled_changed: bool) -> None:
            counted[0] += 1
            changed(runner, settled_changed=settled_changed)  # type: ignore[arg-type]

        sim.sup.changed = counting  # type: ignore[method-assign]
        result = await sim.up()
        assert result["all_ready"]
        took.append(result["took"])
        await sim.stop()

    took: list[float] = []
    simulate(body)
    return counted[0], took[0]


def test_tiers_cost_a_constant_amount_per_service(tmp_path: Path) -> None:
    flat, _ = _publishes(tmp_path, 200, 1)
    tiered, _ = _publishes(tmp_path, 200, 5)
    double, _ = _publishes(tmp_path, 400, 5)
    assert tiered <= 2 * flat, (flat, tiered)  # a few more "waiting for tier ..." updates, not n per service
    assert double <= 2.2 * tiered, (tiered, double)  # linear in the number of services


# ---------------------------------------------------------------- flow 7: backoff at any count


def test_backoff_never_overflows_and_failed_retry_retries_for_ever(tmp_path: Path) -> None:
    m = manifest(
        tmp_path,
        [
            # restarts spaced wider than the window: the start limit never trips, the count grows
            service("looper", port=8001, backoff=Backoff(first=0.02, max=0.05), start_limit=5, start_limit_window=0.01, restart=RestartPolicy.ALWAYS),
            service("retrier", port=8002, start_limit=1, failed_retry=1.0),
        ],
    )

    async def body() -> None:
        sim = Sim(m)
        quick_crash = Program(ready_after=None, exit_after=0.01, exit_code=1)
        sim.world.programs["looper"] = quick_crash
        sim.world.programs["retrier"] = quick_crash
        await sim.start()
        assert sim.sup is not None
        sim.sup.up(None)
        sim.wanted |= {"looper", "retrier"}
        await sim.run_for(120)
        looper, retrier = sim.sup.runners["looper"], sim.sup.runners["retrier"]
        assert looper.restarts > 1100 and looper.history.backoff.attempts > 1025
        assert not looper.reason.startswith("internal error") and looper.state is not S.FAILED
        assert retrier.restarts > 100 and not retrier.reason.startswith("internal error")
        sim.check()
        await sim.stop()

    simulate(body)


# ---------------------------------------------------------------- flow 8: a self-daemonizing program


@pytest.mark.parametrize("listens_before_forking", [True, False])
def test_a_program_that_daemonizes_itself_fails_with_a_reason_naming_the_descendant(tmp_path: Path, listens_before_forking: bool) -> None:
    m = manifest(tmp_path, [service("redis", port=6379, failed_retry=0)])

    async def body() -> None:
        sim = Sim(m)
        sim.world.programs["redis"] = Program(ready_after=0.05 if listens_before_forking else None, exit_after=0.2, daemonize=True)
        await sim.start()
        await sim.up()
        await sim.run_for(1.0)
        runner = sim.sup.runners["redis"]  # type: ignore[union-attr]
        assert runner.state is S.FAILED
        assert "exited with code 0 but left pid" in runner.reason and "listening on port 6379" in runner.reason
        assert "foreground" in runner.reason and "pid_file" in runner.reason
        assert not sim.world.processes_of("redis") and 6379 not in sim.world.listeners  # the descendant was stopped
        sim.check()
        await sim.stop()

    simulate(body)


def test_a_stubborn_process_is_killed_at_stop_timeout_and_down_leaves_nothing(tmp_path: Path) -> None:
    m = manifest(tmp_path, [service("stubborn", port=8001, stop_timeout=3)])

    async def body() -> None:
        sim = Sim(m)
        sim.world.programs["stubborn"] = Program(term_delay=math.inf)
        await sim.start()
        await sim.up()
        import anyio

        began = anyio.current_time()
        await sim.down()
        assert anyio.current_time() - began == pytest.approx(3.0, abs=0.1)
        sim.check()
        await sim.stop()

    simulate(body)


def test_a_daemonizing_program_with_a_pid_file_is_supervised_through_that_pid(tmp_path: Path) -> None:
    pid_file = tmp_path / "redis.pid"
    m = manifest(tmp_path, [service("redis", port=6379, pid_file=pid_file), service("app", port=8000, depends_on=("redis",))])

    async def body() -> None:
        sim = Sim(m)
        sim.world.programs["redis"] = Program(ready_after=None, exit_after=0.1, daemonize=True, pid_file=pid_file)
        await sim.start()
        result = await sim.up()
        assert result["all_ready"] is True
        runner = sim.sup.runners["redis"]  # type: ignore[union-attr]
        daemon = sim.world.main_of("redis")
        assert daemon is not None and daemon.parent is not None and runner.proc is daemon
        assert runner.snap.pid == daemon.pid and runner.state is S.READY
        sim.world.kill("redis")  # the daemon dies: noticed through its pid, restarted
        await sim.run_for(2.0)
        assert runner.state is S.READY and runner.restarts == 1 and sim.world.main_of("redis") is not daemon
        await sim.down()
        assert not sim.world.processes_of("redis")
        sim.check()
        await sim.stop()

    simulate(body)


# ---------------------------------------------------------------- restart counts across reloads and daemons


def test_restart_counts_survive_reloads_and_a_new_daemon_and_reset_on_an_explicit_restart(tmp_path: Path) -> None:
    """`svc status`'s count goes on across a reload (one that restarts the service for a new
    definition too) and a daemon that dies; a person's restart, or up of a stopped service,
    starts it from 0. The per-daemon total (the metric) never goes down while the daemon lives."""
    from dataclasses import replace

    api = service("api", port=8000)
    m = manifest(tmp_path, [api])

    async def body() -> None:
        sim = Sim(m)
        await sim.start()
        await sim.up()

        def runner() -> Any:
            assert sim.sup is not None
            return sim.sup.runners["api"]

        async def crash() -> None:
            old = sim.world.main_of("api")
            sim.world.kill("api")
            await sim.run_for(2.0)
            assert runner().state is S.READY and sim.world.main_of("api") is not old

        await crash()
        await crash()
        assert (runner().restarts, runner().restarts_total) == (2, 2)
        await sim.reload(manifest(tmp_path, [replace(api, description="the API")]))  # no restart
        assert (runner().restarts, runner().restarts_total) == (2, 2)
        changed = await sim.reload(manifest(tmp_path, [replace(api, command=("fake", "api", "v2"))]))
        assert changed["restarted"] == ["api"]
        await sim.run_for(1.0)
        assert runner().state is S.READY and (runner().restarts, runner().restarts_total) == (2, 2)
        assert runner().snap.restarts == 2 and runner().snap.restarts_total == 2
        assert runner().reason == "restarted: its definition changed (reload)"
        await crash()
        assert (runner().restarts, runner().restarts_total) == (3, 3)
        assert runner().reason == ""  # the next state change ended the reload's reason

        await sim.run_for(1.0)  # the state file has caught up
        await sim.crash_daemon_and_restart()
        await sim.run_for(1.0)
        assert runner().state is S.READY and runner().restarts == 3  # resumed, not an explicit start
        assert runner().restarts_total == 0  # a new process's counter starts at 0

        await sim.up(["api"])  # it runs: a no-op, which forgets nothing
        assert runner().restarts == 3
        await sim.restart(["api"])
        assert runner().state is S.READY and (runner().restarts, runner().restarts_total) == (0, 0)
        await crash()
        assert (runner().restarts, runner().restarts_total) == (1, 1)
        await sim.down(["api"])
        await sim.up(["api"])
        assert (runner().restarts, runner().restarts_total) == (0, 1)
        sim.check()
        await sim.stop()

    simulate(body)


# ---------------------------------------------------------------- a crash's sweep and its successor


def _escaped_child_of(sim: Sim, name: str) -> FakeProcess:
    """A child of the service's main process in a process group of its own (a daemonized
    grandchild): only the sweep that follows a crash can find it."""
    main = sim.world.main_of(name)
    assert main is not None
    child = FakeProcess(sim.world, name, main.instance_id, None, Program(ready_after=None), parent=main)
    main.children.append(child)
    sim.world.add(child)
    assert child.pgid != main.pgid
    return child


def test_a_crash_sweep_begins_once_the_successor_is_spawned(tmp_path: Path) -> None:
    """The restart comes first: the sweep for what escaped the crashed instance's group
    (a process-table read in a thread, on a real machine) would hold the spawn back."""
    m = manifest(tmp_path, [service("api", port=8001, restart=RestartPolicy.ALWAYS)])

    async def body() -> None:
        sim = Sim(m)
        await sim.start()
        await sim.up()
        child = _escaped_child_of(sim, "api")
        first = sim.world.main_of("api")
        assert sim.sup is not None
        runner = sim.sup.runners["api"]
        process_at_sweep: list[object] = []  # what the runner supervised when the sweep's signal came
        exit_of_child = child.exit

        def exit_noting_the_runner(rc: int) -> None:
            process_at_sweep.append(runner.proc)
            exit_of_child(rc)

        child.exit = exit_noting_the_runner  # type: ignore[method-assign]
        sim.world.kill("api")
        await sim.run_for(1.0)
        successor = sim.world.main_of("api")
        assert successor is not None and successor is not first
        assert process_at_sweep == [successor]  # the successor was spawned before the sweep began
        assert not child.alive and child.signalled  # and the sweep then found the escaped one
        assert runner.state is S.READY
        sim.check()
        await sim.stop()

    simulate(body)


def test_a_crash_sweep_held_back_by_a_waiting_successor_begins_within_its_limit(tmp_path: Path) -> None:
    """A successor held at its dependency's gate does not keep the escaped processes of
    its crashed predecessor alive: the sweep begins after ``SWEEP_DEFERRAL_LIMIT``."""
    from supervisord_lite.runtime.runner import SWEEP_DEFERRAL_LIMIT

    m = manifest(tmp_path, [
        service("db", port=8001, restart=RestartPolicy.ALWAYS),
        service("api", port=8002, depends_on=("db",), restart=RestartPolicy.ALWAYS),
    ])

    async def body() -> None:
        import anyio

        sim = Sim(m)
        sim.world.programs["db"] = [Program(), Program(ready_after=5.0)]  # slow to come back
        await sim.start()
        await sim.up()
        child = _escaped_child_of(sim, "api")
        sim.world.kill("db")
        sim.world.kill("api")
        crashed_at = anyio.current_time()
        while child.alive:
            await anyio.sleep(0.001)
        swept_after = anyio.current_time() - crashed_at
        assert swept_after == pytest.approx(SWEEP_DEFERRAL_LIMIT, abs=0.01)
        assert [s for _t, s, _pid in sim.world.spawns].count("api") == 1  # api's successor still waits for db
        await sim.run_for(6.0)
        assert sim.sup is not None and sim.sup.runners["api"].state is S.READY
        sim.check()
        await sim.stop()

    simulate(body)
