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


# ---------------------------------------------------------------- verdicts and history


def test_backoff_step_never_overflows() -> None:
    from supervisord_lite.core.policy import backoff_step

    spec = Backoff(first=0.02, max=30, reset_after=30)
    assert backoff_step(spec, 0) == 0.02
    for attempts in (1024, 1025, 10**6, 10**18):
        assert backoff_step(spec, attempts) == 30
    state = BackoffState(spec, attempts=5000)
    assert 15 <= state.next_delay(was_ready=False, rng=random.Random(1)) <= 30


def test_judge_restarts_then_gives_up_at_the_start_limit() -> None:
    from supervisord_lite.core.model import ServiceSpec
    from supervisord_lite.core.policy import Ending, InstanceEnd, Next, RestartHistory, judge

    spec = ServiceSpec(name="api", tier="t", command=("x",), start_limit=2, start_limit_window=60, backoff=Backoff(first=0.5, max=30))
    history = RestartHistory.of(spec)
    crash = InstanceEnd(Ending.EXITED, 3)
    rng = random.Random(0)
    first = judge(spec, crash, history, now=0, was_ready=False, rng=rng)
    assert first.next is Next.RESTART and first.delay == 0.5 and first.cause == "exited with code 3"
    assert first.reason == "exited with code 3; restarting in 0.50s"
    assert judge(spec, crash, history, now=1, was_ready=False, rng=rng).next is Next.RESTART
    third = judge(spec, crash, history, now=2, was_ready=False, rng=rng)
    assert third.next is Next.FAIL and "restarted 2 times in 60s (start_limit)" in third.reason
    assert not history.is_clean
    history.clear()  # an explicit up/restart, or a retry out of failed
    assert history.is_clean
    assert judge(spec, crash, history, now=3, was_ready=False, rng=rng).delay == 0.5


def test_judge_other_endings() -> None:
    from supervisord_lite.core.model import ServiceSpec
    from supervisord_lite.core.policy import Ending, InstanceEnd, Next, RestartHistory, judge

    spec = ServiceSpec(name="api", tier="t", command=("x",), ready_timeout=5)
    history = RestartHistory.of(spec)
    rng = random.Random(0)
    timeout = judge(spec, InstanceEnd(Ending.READY_TIMEOUT, detail=": connection refused"), history, now=0, was_ready=False, rng=rng)
    assert timeout.next is Next.FAIL and timeout.reason == "not ready after 5s (ready_timeout): connection refused"
    assert judge(spec, InstanceEnd(Ending.EXITED, 0), history, now=0, was_ready=True, rng=rng).next is Next.DONE
    unhealthy = judge(spec, InstanceEnd(Ending.UNHEALTHY, detail="unhealthy: port 80 is not listening"), history, now=0, was_ready=True, rng=rng)
    assert unhealthy.next is Next.RESTART and unhealthy.delay == 0  # the first crash of a ready service
    daemonized = judge(spec, InstanceEnd(Ending.DAEMONIZED, 0, "left pid 7"), history, now=0, was_ready=False, rng=rng)
    assert daemonized.next is Next.FAIL and daemonized.reason == "left pid 7"


def test_the_daemonized_reason_names_the_process_and_the_fixes() -> None:
    from pathlib import Path

    from supervisord_lite.core.policy import daemonized_reason

    text = daemonized_reason(0, 4242, "redis-server *:6379   ", 6379)
    assert text.startswith("its main process exited with code 0 but left pid 4242 (redis-server *:6379) listening on port 6379")
    assert "foreground" in text and "pid_file" in text
    assert "kill 4242" in daemonized_reason(0, 4242, "redis-server", 6379, ours=False)
    assert "/run/r.pid (pid_file) named no process" in daemonized_reason(0, 1, "x", None, pid_file=Path("/run/r.pid"))
