"""An event that costs a flag until somebody waits for it.

Each runner has several events that most services never wait on (a backoff cut short,
a log line that makes it ready, the end of an instance being cancelled). An
``anyio.Event`` on asyncio is about 0.75 KB; with hundreds of services, making the
real event only when a waiter comes saves more than the flag costs.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel

__all__ = ["LazyEvent"]


class LazyEvent:
    """``anyio.Event``'s set / is_set / wait, with the event made on the first wait that blocks."""

    __slots__ = ("_event", "_flag")

    def __init__(self) -> None:
        self._flag = False
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self._flag = True
        if self._event is not None:
            self._event.set()

    def is_set(self) -> bool:
        return self._flag

    async def wait(self) -> None:
        if self._flag:
            await anyio.lowlevel.checkpoint()  # as anyio.Event.wait does on a set event
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()
