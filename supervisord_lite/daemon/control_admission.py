"""Who may hold a control connection, and who gives way when too many are open.

Every accepted connection is counted against its peer's uid. A connection is *idle*
while it waits for its request line (or is being refused), *busy* once its request
runs. Only idle connections are ever closed to make room: a request in progress
(an ``up --wait``, a ``watch``) is never cut off.

The caps: at most ``limit`` connections in all (``DescriptorBudget``: derived from
the descriptor limit and what else holds descriptors, so idle clients cannot starve
the services' pipes and probes, nor the requests being answered), and any uid other
than the daemon's own at most half of them, so the daemon's own user always finds
room. A newcomer over a cap closes the oldest idle connection of the uid holding
the most; when nothing is idle it is refused with a message saying why.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field

import anyio


@dataclass(eq=False)
class Connection:
    uid: int
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)  # cancelled to close it while idle
    idle: bool = True
    closed: anyio.Event = field(default_factory=anyio.Event)


class DescriptorBudget:
    """How many control connections the descriptor limit leaves room for.

    At most a quarter of the soft limit (and 256), and never so many that fewer than
    an eighth of it (at least 8) stay free for everything else: the services' pipes and
    log files, probes, and the requests being answered. Measured at every admission, so
    a service started since, or a limit changed with prlimit, counts at once: the size
    of /proc/self/fd is the number of open descriptors (Linux 6.2+, no descriptor
    needed to ask); older kernels list it instead, at most once a second."""

    FALLBACK_INTERVAL = 1.0

    def __init__(self) -> None:
        self._limit = 8
        self._listed_at = -self.FALLBACK_INTERVAL

    def limit(self, connections_open: int) -> int:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft > 1 << 20:
            return 256
        in_use = _descriptors_in_use_by_size()
        if in_use is None:
            now = time.monotonic()
            if now - self._listed_at < self.FALLBACK_INTERVAL:
                return self._limit
            self._listed_at = now
            in_use = _descriptors_in_use_by_listing()
            if in_use is None:  # not one descriptor left to look with: keep the fewest
                self._limit = 2
                return self._limit
        others = max(0, in_use - connections_open)
        reserve = max(8, soft // 8)
        self._limit = max(2, min(256, soft // 4, soft - others - reserve))
        return self._limit


def _descriptors_in_use_by_size() -> int | None:
    try:
        size = os.stat("/proc/self/fd").st_size
    except OSError:
        return None
    return size or None  # 0: a kernel that does not say


def _descriptors_in_use_by_listing() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one the listing itself held
    except OSError:
        return None


class Admission:
    """The open control connections by uid, oldest first, and the caps on them."""

    def __init__(self, own_uid: int, limit: int | None = None) -> None:
        self.own_uid = own_uid
        self._fixed_limit = limit
        self._budget = DescriptorBudget()
        self._by_uid: dict[int, dict[Connection, None]] = {}

    @property
    def limit(self) -> int:
        if self._fixed_limit is not None:
            return self._fixed_limit
        return self._budget.limit(self.count())

    def cap_for(self, uid: int) -> int:
        limit = self.limit
        return limit if uid == self.own_uid else max(1, limit // 2)

    def count(self, uid: int | None = None) -> int:
        if uid is None:
            return sum(len(conns) for conns in self._by_uid.values())
        return len(self._by_uid.get(uid, ()))

    def admit(self, uid: int) -> tuple[Connection, bool]:
        """Count a new connection of ``uid``, closing idle ones to make room for it; the
        connection and whether it is within the caps (when not, refuse it)."""
        within = self._make_room(uid)
        conn = Connection(uid)
        self._by_uid.setdefault(uid, {})[conn] = None
        return conn, within

    def mark_busy(self, conn: Connection) -> None:
        """Its request has arrived: from now on it is never closed to make room."""
        conn.idle = False

    def release(self, conn: Connection) -> None:
        """It is closed (the stream is gone)."""
        conns = self._by_uid.get(conn.uid)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self._by_uid[conn.uid]
        conn.closed.set()

    def evict_one(self) -> Connection | None:
        """Close the oldest idle connection of the uid holding the most (to free a
        descriptor); None when every connection is busy."""
        return self._evict(self._by_uid)

    def _make_room(self, uid: int) -> bool:
        cap, limit = self.cap_for(uid), self.limit
        while self.count(uid) >= cap:
            if self._evict({uid: self._by_uid.get(uid, {})}) is None:
                return False
        while self.count() >= limit:
            if self.evict_one() is None:
                return False
        return True

    def _evict(self, pool: dict[int, dict[Connection, None]]) -> Connection | None:
        # the uid holding the most first; on a tie, another uid's before the daemon's own
        for uid in sorted(pool, key=lambda u: (len(pool[u]), u != self.own_uid), reverse=True):
            victim = next((c for c in pool[uid] if c.idle), None)
            if victim is not None:
                self._by_uid[uid].pop(victim)
                if not self._by_uid[uid]:
                    del self._by_uid[uid]
                victim.scope.cancel()
                return victim
        return None
