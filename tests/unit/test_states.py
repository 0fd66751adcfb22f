"""The pure state machine: every legal path of a service's lifecycle, and illegal moves refused."""

from __future__ import annotations

import pytest

from supervisord_lite.core.states import TRANSITIONS, Event, InvalidTransition, ServiceState, transition

S = ServiceState


def walk(state: ServiceState, *events: Event) -> ServiceState:
    for event in events:
        state = transition(state, event)
    return state


@pytest.mark.parametrize(
    ("events", "end"),
    [
        ((Event.START, Event.DEPS_READY, Event.SPAWNED, Event.READY), S.READY),
        ((Event.START, Event.DEPS_READY, Event.READY, Event.PROBE_FAILED, Event.CRASHED, Event.BACKOFF_OVER), S.WAITING),
        ((Event.START, Event.DEPS_READY, Event.CRASHED, Event.GIVE_UP), S.FAILED),
        ((Event.START, Event.PORT_TAKEN, Event.PORT_FREE, Event.DEPS_READY), S.STARTING),
        ((Event.START, Event.DEPS_READY, Event.DONE), S.EXITED),
        ((Event.START, Event.DEPS_READY, Event.READY, Event.STOP, Event.STOPPED), S.STOPPED),
        ((Event.START, Event.DEPS_READY, Event.GIVE_UP, Event.START), S.WAITING),  # svc up after failed
        ((Event.START, Event.DEPS_READY, Event.READY, Event.DONE, Event.START), S.WAITING),
    ],
)
def test_legal_paths(events: tuple[Event, ...], end: ServiceState) -> None:
    assert walk(S.STOPPED, *events) is end


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.STOPPED, Event.READY),  # cannot be ready without being started
        (S.READY, Event.DEPS_READY),
        (S.STOPPED, Event.CRASHED),
        (S.FAILED, Event.READY),
        (S.DISABLED, Event.START),  # a disabled service never starts
        (S.DEPRECATED, Event.START),
        (S.STOPPING, Event.READY),
    ],
)
def test_illegal_moves_raise(state: ServiceState, event: Event) -> None:
    with pytest.raises(InvalidTransition, match=event.value):
        transition(state, event)


def test_every_state_except_resting_ones_can_be_stopped() -> None:
    for state in S:
        if state in (S.DISABLED, S.DEPRECATED):
            continue
        assert TRANSITIONS[(state, Event.STOP)] is S.STOPPING


def test_every_state_is_reachable_from_stopped() -> None:
    reached = {S.STOPPED}
    frontier = [S.STOPPED]
    while frontier:
        state = frontier.pop()
        for (src, _event), dst in TRANSITIONS.items():
            if src is state and dst not in reached:
                reached.add(dst)
                frontier.append(dst)
    assert reached == set(S)
