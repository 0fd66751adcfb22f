"""The pure decisions of one service's lifecycle: what a request does in each state,
what a woken runner does with its instance, when a service has settled."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from supervisord_lite.core.lifecycle import (
    Intent,
    UpAction,
    is_settled,
    keeps_instance,
    may_stop_for_restart,
    on_up,
    rests_before_start,
)
from supervisord_lite.core.model import Kind
from supervisord_lite.core.states import TRANSIENT_STATES, ServiceState

S = ServiceState


def wanted() -> Intent:
    intent = Intent()
    intent.ask_start(1)
    intent.pending = False
    return intent


@pytest.mark.parametrize(
    ("state", "kind", "expected"),
    [
        (S.STOPPED, Kind.SERVICE, UpAction.START),
        (S.FAILED, Kind.SERVICE, UpAction.START),  # `svc up` of a failed service tries again
        (S.CONFLICT, Kind.SERVICE, UpAction.NOTHING),  # it starts by itself once the port is free
        (S.READY, Kind.SERVICE, UpAction.NOTHING),
        (S.STARTING, Kind.SERVICE, UpAction.NOTHING),
        (S.WAITING, Kind.SERVICE, UpAction.NOTHING),
        (S.BACKOFF, Kind.SERVICE, UpAction.RETRY_NOW),  # an explicit up does not wait out a backoff
        (S.STOPPING, Kind.SERVICE, UpAction.START),  # a down taken back
        (S.EXITED, Kind.ONESHOT, UpAction.NOTHING),  # a finished task is not re-run by up
        (S.EXITED, Kind.SERVICE, UpAction.START),
    ],
)
def test_up_of_a_wanted_service(state: ServiceState, kind: Kind, expected: UpAction) -> None:
    assert on_up(wanted(), state, kind, active=True) is expected


def test_up_starts_whatever_nobody_wanted_and_ignores_inactive_services() -> None:
    for state in S:
        assert on_up(Intent(), state, Kind.SERVICE, active=True) is UpAction.START
        assert on_up(wanted(), state, Kind.SERVICE, active=False) is UpAction.IGNORE


def test_requests_record_the_last_command_and_a_restart_is_consumed_once() -> None:
    intent = Intent()
    intent.ask_restart(4, stop_after=["web"])
    assert intent.wanted and intent.pending and intent.restart and intent.stop_after == {"web"} and intent.command == 4
    assert intent.take_restart() is True
    assert intent.take_restart() is False and intent.stop_after == frozenset()
    intent.ask_stop(5)
    assert not intent.wanted and intent.command == 5
    intent.ask_removal()
    assert intent.removed and not intent.wanted


@pytest.mark.parametrize("state", [S.READY, S.STARTING, S.WAITING, S.BACKOFF, S.UNHEALTHY])
def test_a_running_instance_is_kept_while_wanted_and_no_restart_is_asked(state: ServiceState) -> None:
    intent = wanted()
    assert keeps_instance(intent, state)
    intent.ask_restart(2)
    assert not keeps_instance(intent, state)
    intent = wanted()
    intent.ask_stop(2)
    assert not keeps_instance(intent, state)


@pytest.mark.parametrize("state", [S.FAILED, S.EXITED, S.CONFLICT])
def test_an_instance_resting_on_an_outcome_is_replaced(state: ServiceState) -> None:
    assert not keeps_instance(wanted(), state)


def test_what_rests_before_a_start() -> None:
    intent = wanted()
    assert not rests_before_start(intent, S.STOPPED, has_process=False, restart=False)
    assert not rests_before_start(intent, S.FAILED, has_process=False, restart=False)  # straight back to waiting
    assert rests_before_start(intent, S.FAILED, has_process=False, restart=True)  # a restart shows stopping
    assert rests_before_start(intent, S.READY, has_process=True, restart=True)
    stopped = Intent()
    assert rests_before_start(stopped, S.EXITED, has_process=False, restart=False)
    assert not rests_before_start(stopped, S.DISABLED, has_process=False, restart=False)


@dataclass
class Dependent:
    has_process: bool
    command: int


def test_a_restart_with_dependents_waits_for_their_processes_to_be_gone() -> None:
    assert may_stop_for_restart(3, [])
    assert not may_stop_for_restart(3, [Dependent(True, 3), Dependent(False, 3)])
    assert may_stop_for_restart(3, [Dependent(False, 3), Dependent(False, 3)])
    assert may_stop_for_restart(3, [Dependent(True, 4)])  # a later command took it over


def test_settled_means_an_outcome() -> None:
    for state in S:
        transient = state in TRANSIENT_STATES
        assert is_settled(state, pending=False, wanted=True, stuck=False) is (not transient)
        assert is_settled(state, pending=True, wanted=True, stuck=False) is False  # asked, not begun
        assert is_settled(state, pending=False, wanted=False, stuck=False) is True  # nobody wants it any more
    assert is_settled(S.WAITING, pending=False, wanted=True, stuck=True)  # its dependency failed
    assert not is_settled(S.BACKOFF, pending=False, wanted=True, stuck=True)
