"""Which services changed, in order: readers follow it with a cursor.

`svc up` of 1000 services sends an update at every change; finding what changed by
comparing all 1000 services at each update made every update cost as much as the
whole platform. The supervisor appends the name of each service that publishes a
change; a reader remembers the cursor it last read at and asks what changed since,
so an update costs what changed.
"""

from __future__ import annotations

#: appended when a change cannot be pinned to services (a reload replaced them): look at all
EVERYTHING = None


class ChangeFeed:
    """An append-only record of changed service names, trimmed to the last ``keep`` entries.

    A reader that fell further behind than what is kept, or that meets an
    ``EVERYTHING`` entry, is told to look at every service (``since`` returns None):
    never a change missed, at worst one full look."""

    def __init__(self, keep: int = 8192) -> None:
        self.keep = max(1, keep)
        self._names: list[str | None] = []
        self._first = 0  # the cursor of _names[0]

    @property
    def cursor(self) -> int:
        """Where a reader starting now stands."""
        return self._first + len(self._names)

    def add(self, name: str | None) -> None:
        """Record that service ``name`` changed (``EVERYTHING``: any of them may have)."""
        self._names.append(name)
        if len(self._names) >= 2 * self.keep:  # trim in halves: appends stay O(1) on average
            drop = len(self._names) - self.keep
            del self._names[:drop]
            self._first += drop

    def since(self, cursor: int) -> set[str] | None:
        """The services changed after ``cursor``; None when the reader must look at all."""
        if cursor < self._first:
            return None
        names = self._names[cursor - self._first :]
        found: set[str] = set()
        for name in names:
            if name is EVERYTHING:
                return None
            found.add(name)
        return found
