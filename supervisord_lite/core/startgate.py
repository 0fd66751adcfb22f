"""When a service may start: its dependencies, and the tier barrier of its `svc up`.

Two different rules, on purpose:

- ``depends_on`` is a readiness dependency: a service starts only once everything it
  depends on is ready (a one-shot: exited 0), and a failed or stopped dependency
  blocks exactly the services that depend on it.
- Tier order is a start order: a service of a later tier starts once every service of
  earlier tiers *in the same `up`* has settled (ready, failed, exited, conflict, or no
  longer wanted), whatever the outcome. ``UpBatch`` keeps that barrier for one `up`,
  with counters, so hundreds of services cost a constant amount per state change.

Pure: the runtime feeds ``UpBatch.update`` with settledness changes and reads views of
the dependencies.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from supervisord_lite.core.model import Kind
from supervisord_lite.core.states import ServiceState

S = ServiceState
WAITING_FOR_TIERS = "waiting for the earlier tiers of this up to settle"


class DependencyView(Protocol):
    """What the gate reads of a dependency (a runner)."""

    @property
    def state(self) -> ServiceState: ...

    @property
    def kind(self) -> Kind: ...

    @property
    def restarting(self) -> bool: ...

    @property
    def settled(self) -> bool: ...

    @property
    def reason(self) -> str: ...


def satisfies(state: ServiceState, kind: Kind, *, restarting: bool) -> bool:
    """Does a dependency in this state let its dependents start? Ready; a one-shot once it
    exited 0 (`exited` is only reached that way). Not while a restart of it is asked and
    not yet begun: its dependents must wait for the new instance."""
    if restarting:
        return False
    return state is S.READY or (state is S.EXITED and kind is Kind.ONESHOT)


def describe_blocker(name: str, view: DependencyView) -> str:
    if view.restarting:
        return f"{name} (restarting)"
    if view.state in (S.FAILED, S.CONFLICT) and view.reason:
        return f"{name} ({view.state.value}: {view.reason})"
    return f"{name} ({view.state.value})"


@dataclass(frozen=True, slots=True)
class Blockers:
    """The dependencies a service waits for, and whether that wait is stuck."""

    names: tuple[str, ...] = ()
    stuck: bool = False  # one of them settled without becoming ready: only a change of it helps
    reason: str = ""

    def __bool__(self) -> bool:
        return bool(self.names)


def dependency_blockers(depends_on: Iterable[str], views: Mapping[str, DependencyView]) -> Blockers:
    """The dependencies of a service that do not let it start yet (unknown names are ignored)."""
    blocking = sorted(
        name for name in set(depends_on)
        if (view := views.get(name)) is not None and not satisfies(view.state, view.kind, restarting=view.restarting)
    )
    if not blocking:
        return Blockers()
    stuck = any(views[name].settled and not views[name].restarting for name in blocking)
    reason = "waiting for " + ", ".join(describe_blocker(name, views[name]) for name in blocking)
    return Blockers(tuple(blocking), stuck, reason)


class UpBatch:
    """The tier barrier of one `svc up` (or `svc restart`): its services by tier order.

    A member of tier order ``k`` may start once every member of a lower order has
    settled. The barrier only ever opens: once a tier could start, a later change of
    an earlier member (a crash, a retry) does not hold it back again; tier order is a
    start order, not a dependency.
    """

    def __init__(self, members: Mapping[str, int], settled: Callable[[str], bool]) -> None:
        self.order = dict(members)
        self.levels = sorted(set(self.order.values()))
        self._unsettled: dict[int, set[str]] = {level: set() for level in self.levels}
        for name, level in self.order.items():
            if not settled(name):
                self._unsettled[level].add(name)
        self._frontier = 0  # index into levels: every lower level has settled (once)
        self._advance()

    def _advance(self) -> bool:
        moved = False
        while self._frontier < len(self.levels) and not self._unsettled[self.levels[self._frontier]]:
            self._frontier += 1
            moved = True
        return moved

    @property
    def frontier(self) -> int | None:
        """The lowest tier order whose members have not all settled (None: all have)."""
        return self.levels[self._frontier] if self._frontier < len(self.levels) else None

    @property
    def done(self) -> bool:
        return self._frontier >= len(self.levels)

    def update(self, name: str, settled: bool) -> bool:
        """A member's settledness changed; True when the barrier opened further."""
        level = self.order.get(name)
        if level is None or self.done:
            return False
        index = bisect.bisect_left(self.levels, level)
        if index < self._frontier:
            return False  # its tier has been passed: later tiers are not held back again
        members = self._unsettled[level]
        if settled:
            members.discard(name)
        else:
            members.add(name)
        return self._advance()

    def is_open_for(self, order: int) -> bool:
        """May a member of tier order ``order`` start (every lower tier settled)?"""
        frontier = self.frontier
        return frontier is None or order <= frontier

    def waiting_reason(self) -> str:
        """Why a member waits on the barrier. The same words while it waits, so a
        barrier that opens tier by tier does not republish hundreds of waiting services."""
        return "" if self.done else WAITING_FOR_TIERS
