"""Pure restart policy: what to do after an exit, how long to back off, when to give up.

No I/O and no clock of its own: callers pass ``now`` (monotonic seconds) and a
random source, so every decision is reproducible in tests.
"""

from __future__ import annotations

import enum
import random
import signal
from collections import deque
from dataclasses import dataclass, field

from supervisord_lite.core.model import Backoff, Kind, RestartPolicy


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
        step = min(self.spec.max, self.spec.first * (2 ** max(0, self.attempts - (1 if was_ready else 0))))
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
    _times: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        """Record a restart at ``now``; False when it would exceed the limit."""
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True

    def reset(self) -> None:
        self._times.clear()
