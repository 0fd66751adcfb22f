"""`svc up`'s progress updates carry only what changed: a client that follows them must
still see every service as it is, at every update, whatever happens meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supervisord_lite.core.changefeed import ChangeFeed
from supervisord_lite.core.model import Backoff
from supervisord_lite.core.states import ServiceState
from tests.simulation import vloop
from tests.simulation.harness import Sim, manifest, service
from tests.simulation.world import Program

S = ServiceState
CRASH = Program(ready_after=None, exit_after=0.3, exit_code=3)


def _key(s: dict[str, Any]) -> tuple[Any, ...]:
    """What `svc up` prints a line for: the state, its reason, becoming ready (again)."""
    return s["state"], s["reason"], s["ready_at"], tuple(s["blocked_by"])


async def _follow(sim: Sim, op: str, args: dict[str, Any], during: Any = None) -> tuple[dict[str, Any], int, int]:
    """Run ``op`` as a client would, checking at every update that the view built from
    the updates alone matches every runner; the final result, the updates, the
    services they carried in all."""
    assert sim.daemon is not None and sim.sup is not None
    view: dict[str, dict[str, Any]] = {}
    updates = carried = 0
    first = True
    async for message in sim.daemon.handle(op, args):
        if message.get("done"):
            assert message["ok"], message
            for s in message["result"]["services"]:  # the answer agrees with the updates
                assert _key(view[s["name"]]) == _key(s), s["name"]
            return message["result"], updates, carried
        updates += 1
        carried += len(message["progress"])
        for s in message["progress"]:
            view[s["name"]] = s
        if first:  # the first update has every service of the request
            names = set(view)
            first = False
        for name in names:
            truth = sim.sup.runners[name].snap.to_dict()
            assert _key(view[name]) == _key(truth), (name, view[name]["state"], truth["state"], truth["reason"])
        if during is not None and updates == 3:
            await during()
    raise AssertionError("no final answer")


def test_a_client_following_the_updates_sees_every_service_as_it_is(tmp_path: Path) -> None:
    tiers = {"data": 0, "app": 1}
    specs = [service(f"db{i}", tier="data", port=21000 + i) for i in range(5)]
    specs += [service(f"api{i}", tier="app", port=22000 + i, depends_on=(f"db{i}",)) for i in range(5)]
    specs += [service("flaky", tier="app", port=23000, backoff=Backoff(first=0.2, max=0.4), start_limit=2)]
    m = manifest(tmp_path, specs, tiers)

    async def body() -> None:
        sim = Sim(m)
        sim.world.programs["flaky"] = [CRASH, CRASH, CRASH]  # crashes, backs off, and fails at its start limit
        sim.world.programs["db3"] = Program(ready_after=2.0)  # api3 waits on it for a while
        await sim.start()
        result, updates, carried = await _follow(sim, "up", {"names": []})
        assert sim.state("flaky") is S.FAILED and sim.state("api3") is S.READY
        assert result["all_ready"] is False and updates > 3
        # each update carries what changed, not every service again
        assert carried < updates * len(specs) / 2, (carried, updates)
        await sim.stop()

    vloop.run(body)


def test_updates_stay_complete_when_a_reload_replaces_services_during_the_wait(tmp_path: Path) -> None:
    specs = [service(f"s{i}", port=24000 + i) for i in range(6)]
    m = manifest(tmp_path, specs)
    changed = manifest(tmp_path / "new", [*specs[:5], service("s5", port=24005, stop_timeout=3.0)])

    async def body() -> None:
        sim = Sim(m)
        for i in range(6):
            sim.world.programs[f"s{i}"] = Program(ready_after=0.5 + i)
        await sim.start()

        async def reload() -> None:
            assert sim.sup is not None
            await sim.sup.reload(changed)

        result, _updates, _carried = await _follow(sim, "up", {"names": []}, during=reload)
        assert result["all_ready"] is True
        await sim.stop()

    vloop.run(body)


def test_change_feed_tells_what_changed_since_a_cursor() -> None:
    feed = ChangeFeed(keep=4)
    start = feed.cursor
    feed.add("a")
    feed.add("b")
    feed.add("a")
    assert feed.since(start) == {"a", "b"}
    middle = feed.cursor
    assert feed.since(middle) == set()
    feed.add("c")
    assert feed.since(middle) == {"c"}
    feed.add(None)  # anything may have changed
    assert feed.since(middle) is None
    after = feed.cursor
    feed.add("d")
    assert feed.since(after) == {"d"}


def test_change_feed_sends_a_reader_that_fell_behind_to_look_at_everything() -> None:
    feed = ChangeFeed(keep=3)
    old = feed.cursor
    for name in "abcdefgh":
        feed.add(name)
    assert feed.since(old) is None  # what it missed is no longer kept: a full look, never a gap
    recent = feed.cursor
    feed.add("z")
    assert feed.since(recent) == {"z"}
    assert len(feed._names) < 2 * feed.keep  # bounded however long the daemon runs


def test_up_answers_as_soon_as_the_last_service_settles(tmp_path: Path) -> None:
    m = manifest(tmp_path, [service("a", port=25000), service("b", port=25001)])

    async def body() -> None:
        sim = Sim(m)
        sim.world.programs["a"] = Program(ready_after=0.5)
        sim.world.programs["b"] = Program(ready_after=1.0)
        await sim.start()
        result = await sim.up()
        assert sim.sup is not None
        b = sim.sup.runners["b"]
        assert b.ready_at is not None and b.started_at is not None
        # no pause to gather more changes once nothing is left to wait for
        assert result["took"] - (b.ready_at - b.started_at) < 0.03, result["took"]
        await sim.stop()

    vloop.run(body)


def test_the_answer_comes_when_the_last_service_settles_not_at_the_end_of_a_batch(tmp_path: Path) -> None:
    """Updates are gathered for PROGRESS_BATCH, but the last service to settle is answered
    within SETTLE_POLL: four services ready 10 ms apart, all inside one batch window."""
    from supervisord_lite.runtime.supervisor import PROGRESS_BATCH, SETTLE_POLL

    specs = [service(f"s{i}", port=25000 + i) for i in range(4)]
    m = manifest(tmp_path, specs)

    async def body() -> None:
        sim = Sim(m)
        for i in range(4):
            sim.world.programs[f"s{i}"] = Program(ready_after=0.5 + 0.01 * i)
        await sim.start()
        assert sim.daemon is not None and sim.sup is not None
        async for message in sim.daemon.handle("up", {"names": []}):
            if message.get("done"):
                answered = sim.world.wall()
                break
        ready = [sim.sup.runners[f"s{i}"].ready_at for i in range(4)]
        assert all(t is not None for t in ready), ready
        last, first = max(ready), min(ready)  # type: ignore[type-var]
        assert last - first < PROGRESS_BATCH  # they did settle within one window
        assert 0 <= answered - last <= SETTLE_POLL + 0.001, (answered - last, ready)
        await sim.stop()

    vloop.run(body)
