"""When a service may start: dependencies (ready; a one-shot exited 0) and the tier
barrier of one `up` (every earlier tier settled, whatever the outcome)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from supervisord_lite.core.model import Kind
from supervisord_lite.core.startgate import WAITING_FOR_TIERS, UpBatch, dependency_blockers, satisfies
from supervisord_lite.core.states import ServiceState

S = ServiceState


@dataclass
class View:
    state: ServiceState
    kind: Kind = Kind.SERVICE
    restarting: bool = False
    settled: bool = False
    reason: str = ""


def test_what_satisfies_a_dependency() -> None:
    assert satisfies(S.READY, Kind.SERVICE, restarting=False)
    assert not satisfies(S.READY, Kind.SERVICE, restarting=True)  # its dependents wait for the new instance
    assert satisfies(S.EXITED, Kind.ONESHOT, restarting=False)
    assert not satisfies(S.EXITED, Kind.SERVICE, restarting=False)  # a service that exited is not running
    for state in set(S) - {S.READY, S.EXITED}:
        assert not satisfies(state, Kind.SERVICE, restarting=False)
        assert not satisfies(state, Kind.ONESHOT, restarting=False)


def test_blockers_name_each_dependency_and_why() -> None:
    views = {
        "db": View(S.FAILED, settled=True, reason="not ready after 30s (ready_timeout)"),
        "cache": View(S.STARTING),
        "migrate": View(S.EXITED, Kind.ONESHOT, settled=True),
        "queue": View(S.READY, restarting=True),
    }
    blockers = dependency_blockers(["db", "cache", "migrate", "queue", "gone"], views)
    assert blockers.names == ("cache", "db", "queue")
    assert blockers.stuck  # db failed: only a change of db helps
    assert blockers.reason == "waiting for cache (starting), db (failed: not ready after 30s (ready_timeout)), queue (restarting)"
    assert not dependency_blockers(["cache"], views).stuck  # still on its way
    assert not dependency_blockers(["migrate"], views)


def test_a_later_tier_waits_for_every_earlier_one_to_settle_then_never_again() -> None:
    settled = {"db": False, "cache": True, "api": False, "web": False}
    batch = UpBatch({"db": 0, "cache": 0, "api": 1, "web": 2}, lambda n: settled[n])
    assert batch.is_open_for(0) and not batch.is_open_for(1) and not batch.is_open_for(2)
    assert batch.waiting_reason() == WAITING_FOR_TIERS
    assert batch.update("db", True) is True  # db failed, say: settled all the same
    assert batch.is_open_for(1) and not batch.is_open_for(2)
    assert batch.update("db", False) is False  # it retries: tier 1 already started, nothing closes
    assert batch.is_open_for(1)
    assert batch.update("web", True) is False  # the last tier settling opens nothing new
    batch.update("api", True)
    assert batch.done and batch.is_open_for(2) and batch.waiting_reason() == ""


@given(
    orders=st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 3), min_size=1),
    initially=st.sets(st.sampled_from("abcdefgh")),
    changes=st.lists(st.tuples(st.sampled_from("abcdefgh"), st.booleans()), max_size=30),
)
def test_the_barrier_is_a_start_order(orders: dict[str, int], initially: set[str], changes: list[tuple[str, bool]]) -> None:
    """A tier opens once every member of the tiers before it has settled; once open it
    stays open, whatever those members do later."""
    state = {n: n in initially for n in orders}
    batch = UpBatch(orders, lambda n: state[n])
    levels = sorted(set(orders.values()))
    passed = 0  # the model: how many tiers have been passed
    for name, settled in [("", True), *changes]:
        if name in state:
            state[name] = settled
            batch.update(name, settled)
        while passed < len(levels) and all(state[n] for n, o in orders.items() if o == levels[passed]):
            passed += 1
        for i, level in enumerate(levels):
            assert batch.is_open_for(level) is (i <= passed), (level, passed, state)
        assert batch.done is (passed == len(levels))
