"""Pure restart policy: what to do when an instance ends, how long to back off, when to give up.

No I/O and no clock of its own: callers pass ``now`` (monotonic seconds) and a
random source, so every decision is reproducible in tests.
"""

from __future__ import annotations

import enum
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path

from supervisord_lite.core.model import Backoff, Kind, RestartPolicy, ServiceSpec

#: The exponent of the backoff stops growing here: ``first * 2**62`` is beyond any
#: ``max`` a manifest can hold, and a float power never overflows (the count itself may
#: grow for ever: a service under ``failed_retry`` can restart thousands of times).
MAX_DOUBLINGS = 62


class AfterExit(enum.Enum):
    RESTART = "restart"
    DONE = "done"  # exited 0, stays exited
    FAIL = "fail"  # exited non-zero (or by a signal) and is not restarted


def after_exit(policy: RestartPolicy, kind: Kind, returncode: int) -> AfterExit:
    """The decision once the service's main process ended with ``returncode``."""
    success = returncode == 0
    if kind is Kind.ONESHOT and success:
        return AfterExit.DONE  # a finished task is never restarted, whatever the policy
    if policy is RestartPolicy.ALWAYS:
        return AfterExit.RESTART
    if policy is RestartPolicy.ON_FAILURE:
        return AfterExit.DONE if success else AfterExit.RESTART
    return AfterExit.DONE if success else AfterExit.FAIL


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


def backoff_step(spec: Backoff, attempts: int) -> float:
    """``first * 2**attempts`` capped at ``max``, for any count without overflow."""
    return min(spec.max, spec.first * 2.0 ** min(max(0, attempts), MAX_DOUBLINGS))


@dataclass
class BackoffState:
    """Exponential backoff with jitter, between ``first`` and ``max``.

    The first restart after a service that had become ready is immediate (a one-off
    crash should cost nothing); further restarts in a row wait first, 2*first, 4*first
    ... capped at max, each jittered to between half the step and the step (never below
    ``first``) so services that crash together do not restart in lockstep. The count
    goes back to zero once the service has stayed ready ``reset_after`` seconds.
    """

    spec: Backoff
    attempts: int = 0

    def next_delay(self, *, was_ready: bool, rng: random.Random) -> float:
        if self.attempts == 0 and was_ready:
            self.attempts = 1
            return 0.0
        step = backoff_step(self.spec, self.attempts - (1 if was_ready else 0))
        self.attempts += 1
        low = max(self.spec.first, step / 2)
        if low >= step:
            return step
        return rng.uniform(low, step)

    def stayed_ready(self, seconds: float) -> None:
        if seconds >= self.spec.reset_after:
            self.attempts = 0


@dataclass
class StartLimiter:
    """At most ``limit`` restarts within ``window`` seconds, then give up."""

    limit: int
    window: float
    _times: list[float] = field(default_factory=list)  # a few entries: a list is ~300 bytes smaller than a deque

    def allow(self, now: float) -> bool:
        """Record a restart at ``now``; False when it would exceed the limit."""
        while self._times and now - self._times[0] > self.window:
            del self._times[0]
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True

    def reset(self) -> None:
        self._times.clear()

    @property
    def recorded(self) -> int:
        return len(self._times)


@dataclass
class RestartHistory:
    """What the backoff and the start limit remember of one service's restarts.

    An explicit `svc up` or `svc restart`, and each slow retry out of `failed`, starts
    from a clean history: the first restart waits ``backoff.first`` again and the
    start limit counts from zero, so a crash loop always ends in `failed` within the
    same budget as the first time.
    """

    backoff: BackoffState
    limiter: StartLimiter

    @classmethod
    def of(cls, spec: ServiceSpec) -> RestartHistory:
        return cls(BackoffState(spec.backoff), StartLimiter(spec.start_limit, spec.start_limit_window))

    def clear(self) -> None:
        self.backoff.attempts = 0
        self.limiter.reset()

    @property
    def is_clean(self) -> bool:
        return self.backoff.attempts == 0 and self.limiter.recorded == 0


class Ending(enum.Enum):
    """How one instance of a service ended."""

    EXITED = "exited"  # the main process exited (returncode)
    READY_TIMEOUT = "ready_timeout"
    UNHEALTHY = "unhealthy"  # liveness failed unhealthy_threshold times
    MEMORY = "memory"  # above max_memory
    SPAWN_ERROR = "spawn_error"  # the command could not be started at all
    DAEMONIZED = "daemonized"  # the main process exited 0 leaving a descendant behind


@dataclass(frozen=True, slots=True)
class InstanceEnd:
    kind: Ending
    returncode: int | None = None
    detail: str = ""


class Next(enum.Enum):
    RESTART = "restart"  # back off ``delay`` seconds, then start again
    DONE = "done"  # `exited`, for good
    FAIL = "fail"  # `failed` (slow retry after failed_retry, when set)


@dataclass(frozen=True, slots=True)
class Verdict:
    next: Next
    reason: str  # for people: the cause, and what comes next
    delay: float = 0.0
    cause: str = ""  # the cause alone ("exited with code 3")


def judge(
    spec: ServiceSpec,
    end: InstanceEnd,
    history: RestartHistory,
    *,
    now: float,
    was_ready: bool,
    rng: random.Random,
) -> Verdict:
    """What follows the end of one instance: restart (after how long), done, or failed.

    Records the restart in ``history`` when there is one."""
    if end.kind is Ending.READY_TIMEOUT:
        return Verdict(Next.FAIL, f"not ready after {spec.ready_timeout:g}s (ready_timeout){end.detail}")
    if end.kind in (Ending.SPAWN_ERROR, Ending.DAEMONIZED):
        return Verdict(Next.FAIL, end.detail)
    if end.kind in (Ending.UNHEALTHY, Ending.MEMORY):
        decision, why = AfterExit.RESTART, end.detail
    else:
        rc = end.returncode if end.returncode is not None else -signal.SIGKILL
        decision, why = after_exit(spec.restart, spec.kind, rc), describe_exit(rc)
    if decision is AfterExit.DONE:
        return Verdict(Next.DONE, why)
    if decision is AfterExit.FAIL:
        return Verdict(Next.FAIL, why)
    if not history.limiter.allow(now):
        return Verdict(
            Next.FAIL,
            f"{why}; restarted {spec.start_limit} times in {spec.start_limit_window:g}s (start_limit), giving up",
        )
    delay = history.backoff.next_delay(was_ready=was_ready, rng=rng)
    return Verdict(Next.RESTART, f"{why}; restarting in {delay:.2f}s" if delay else f"{why}; restarting", delay, why)


def daemonized_reason(
    returncode: int, pid: int, cmdline: str, port: int | None, *, ours: bool = True, pid_file: Path | None = None
) -> str:
    """Why a service whose main process exited 0 while a process it started lives on is
    failed, and what to do about it."""
    holding = f"listening on port {port}" if port is not None else "running"
    shown = f" ({cmdline.strip()})" if cmdline.strip() else ""
    left = f"its main process {describe_exit(returncode)} but left pid {pid}{shown} {holding}"
    if not ours:
        left += (
            "; that process left the session and cleared its environment, so it cannot be proven to be "
            f"this service's and is left running: stop it (kill {pid})"
        )
    if pid_file is not None:
        return f"{left}; {pid_file} (pid_file) named no process of this service: check that the program writes its pid there"
    return (
        f"{left}. The program put itself in the background, which cannot be supervised: run it in the "
        "foreground (e.g. `redis-server --daemonize no`, `postgres -D DIR` instead of `pg_ctl start`), "
        'or set pid_file = "PATH" to the file where it writes its pid'
    )
