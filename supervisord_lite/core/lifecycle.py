"""What people asked of one service, and the pure decisions that follow from it.

A runner (``runtime.runner``) holds one ``Intent`` and its state from
``core.states``; what it does on each request is decided here, so every branch can
be tested without processes or an event loop:

- ``on_up``: what `svc up` does to a service in a given state (nothing, start, or
  retry at once out of backoff);
- ``keeps_instance`` / ``rests_before_start``: what the runner does with a running
  instance when it is woken by a request;
- ``may_stop_for_restart``: a restart with dependents stops the dependents first;
- ``is_settled``: whether a service has reached an outcome, for `svc up` and for the
  tier barrier of later tiers.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from supervisord_lite.core.model import Kind
from supervisord_lite.core.states import RUNNING_STATES, TRANSIENT_STATES, ServiceState

S = ServiceState

#: States in which a runner's instance task rests on an outcome rather than running a process.
RESTING_OUTCOMES = frozenset({S.FAILED, S.CONFLICT, S.STOPPED, S.DISABLED, S.DEPRECATED, S.EXITED})
#: A start asked of a service in one of these is a no-op: it runs or is on its way.
ON_ITS_WAY = (RUNNING_STATES | TRANSIENT_STATES | {S.CONFLICT}) - {S.STOPPING, S.BACKOFF}
#: States at rest without a process.
AT_REST = frozenset({S.STOPPED, S.DISABLED, S.DEPRECATED})


@dataclass
class Intent:
    """What was asked of one service, beyond its state.

    ``wanted``: some `up`/`restart` asked it to run and no later `down` took that back.
    ``pending``: a start was asked for and the runner has not begun it (an `up` waits).
    ``restart``: stop the running instance before starting again; until the runner
    stops it, the service does not count as ready for its dependents.
    ``stop_after``: for a restart with dependents, the dependents (restarted by the
    same command) whose processes must be gone before this one stops.
    ``removed``: gone from the manifest: the runner ends.
    ``command``: the sequence number of the last command that named it; the last
    command wins when several overlap.
    """

    wanted: bool = False
    pending: bool = False
    restart: bool = False
    stop_after: frozenset[str] = field(default_factory=frozenset)
    removed: bool = False
    command: int = 0

    def ask_start(self, command: int) -> None:
        self.wanted = True
        self.pending = True
        self.command = command

    def ask_restart(self, command: int, stop_after: Iterable[str] = ()) -> None:
        self.wanted = True
        self.pending = True
        self.restart = True
        self.stop_after = frozenset(stop_after)
        self.command = command

    def ask_stop(self, command: int) -> None:
        self.wanted = False
        self.command = command

    def ask_removal(self) -> None:
        self.removed = True
        self.wanted = False

    def take_restart(self) -> bool:
        """The runner acts on a restart request: consume it."""
        restart, self.restart, self.stop_after = self.restart, False, frozenset()
        return restart


class UpAction(enum.Enum):
    IGNORE = "ignore"  # disabled or deprecated: never started
    NOTHING = "nothing"  # it runs or is on its way, or a finished one-shot: `up` is a no-op
    START = "start"  # wake the runner to start it (again)
    RETRY_NOW = "retry_now"  # in backoff: cut the wait short and try now


def on_up(intent: Intent, state: ServiceState, kind: Kind, *, active: bool) -> UpAction:
    """What `svc up` does to one service of its start set."""
    if not active:
        return UpAction.IGNORE
    if intent.wanted and not intent.removed:
        if state is S.BACKOFF:
            return UpAction.RETRY_NOW
        if state in ON_ITS_WAY:
            return UpAction.NOTHING
        if state is S.EXITED and kind is Kind.ONESHOT:
            return UpAction.NOTHING  # a finished task does not run again on `up`; `restart` re-runs it
    return UpAction.START


def keeps_instance(intent: Intent, state: ServiceState) -> bool:
    """Woken with an instance task alive: leave it alone? Yes while the service is wanted,
    no restart is asked, and the instance is not resting on an outcome (failed,
    exited, conflict): a `down` taken back by a later `up` changes nothing."""
    return intent.wanted and not intent.restart and state not in RESTING_OUTCOMES


def rests_before_start(intent: Intent, state: ServiceState, *, has_process: bool, restart: bool) -> bool:
    """Once the instance task is gone: stop what is left and show `stopping`/`stopped`?

    Not when it is already at rest, nor when it goes straight back to `waiting` from an
    outcome without a process (`svc up` of a failed service)."""
    if state in AT_REST and not has_process:
        return False
    if intent.wanted and not restart and not has_process and state in RESTING_OUTCOMES:
        return False
    return True


class StopView(Protocol):
    """What ``may_stop_for_restart`` reads of a dependent."""

    @property
    def has_process(self) -> bool: ...

    @property
    def command(self) -> int: ...


def may_stop_for_restart(command: int, dependents: Iterable[StopView]) -> bool:
    """A restart with dependents stops the dependents first: this service may stop once
    none of them (restarted by the same command) has a process left. A dependent that
    a later command took over no longer holds it back."""
    return all(not d.has_process or d.command != command for d in dependents)


def is_settled(state: ServiceState, *, pending: bool, wanted: bool, stuck: bool) -> bool:
    """Has the service reached an outcome? For `svc up`, and for the tier barrier.

    Ready, exited, failed, conflict and stopped are outcomes; so is a service nobody
    wants any more, and one waiting for a dependency that itself settled without
    becoming ready (``stuck``): it waits until that one changes. A start asked for
    and not yet begun is not an outcome."""
    if pending:
        return False
    if not wanted:
        return True
    if state not in TRANSIENT_STATES:
        return True
    return state is S.WAITING and stuck
