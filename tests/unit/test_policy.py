"""Restart decisions, backoff bounds and jitter, the start limit."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisord_lite.core.model import Backoff, Kind, RestartPolicy
from supervisord_lite.core.policy import AfterExit, BackoffState, StartLimiter, after_exit, describe_exit


@pytest.mark.parametrize(
    ("policy", "kind", "rc", "expected"),
    [
        (RestartPolicy.ALWAYS, Kind.SERVICE, 0, AfterExit.RESTART),
        (RestartPolicy.ALWAYS, Kind.SERVICE, 3, AfterExit.RESTART),
        (RestartPolicy.ON_FAILURE, Kind.SERVICE, 0, AfterExit.DONE),
        (RestartPolicy.ON_FAILURE, Kind.SERVICE, 1, AfterExit.RESTART),
        (RestartPolicy.ON_FAILURE, Kind.SERVICE, -9, AfterExit.RESTART),
        (RestartPolicy.NO, Kind.SERVICE, 0, AfterExit.DONE),
        (RestartPolicy.NO, Kind.SERVICE, 2, AfterExit.FAIL),
        (RestartPolicy.ALWAYS, Kind.ONESHOT, 0, AfterExit.DONE),
        (RestartPolicy.NO, Kind.ONESHOT, 1, AfterExit.FAIL),
    ],
)
def test_after_exit(policy: RestartPolicy, kind: Kind, rc: int, expected: AfterExit) -> None:
    assert after_exit(policy, kind, rc) is expected


def test_describe_exit_names_signals() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"


@given(
    first=st.floats(0.01, 5),
    factor=st.floats(1, 100),
    seed=st.integers(0, 2**32),
    n=st.integers(1, 30),
    was_ready=st.booleans(),
)
def test_backoff_stays_within_first_and_max(first: float, factor: float, seed: int, n: int, was_ready: bool) -> None:
    spec = Backoff(first=first, max=first * factor, reset_after=30)
    state = BackoffState(spec)
    rng = random.Random(seed)
    delays = [state.next_delay(was_ready=was_ready and i == 0, rng=rng) for i in range(n)]
    for i, d in enumerate(delays):
        if i == 0 and was_ready:
            assert d == 0.0  # a one-off crash of a healthy service restarts at once
        else:
            assert spec.first <= d <= spec.max


def test_backoff_grows_then_resets_after_staying_ready() -> None:
    state = BackoffState(Backoff(first=1, max=8, reset_after=30))
    rng = random.Random(1)
    steps = [state.next_delay(was_ready=False, rng=rng) for _ in range(6)]
    assert steps[0] == 1
    assert 4 <= steps[-1] <= 8
    state.stayed_ready(10)
    assert state.attempts == 6
    state.stayed_ready(31)
    assert state.attempts == 0


def test_two_services_crashing_together_do_not_restart_in_lockstep() -> None:
    a, b = BackoffState(Backoff(first=1, max=60)), BackoffState(Backoff(first=1, max=60))
    ra, rb = random.Random(1), random.Random(2)
    pairs = [(a.next_delay(was_ready=False, rng=ra), b.next_delay(was_ready=False, rng=rb)) for _ in range(6)]
    assert any(abs(x - y) > 0.05 for x, y in pairs[1:])


def test_start_limit_counts_within_the_window() -> None:
    limiter = StartLimiter(limit=3, window=10)
    assert [limiter.allow(t) for t in (0, 1, 2)] == [True, True, True]
    assert limiter.allow(3) is False
    assert limiter.allow(10.5) is True  # the restart at t=0 has left the window
