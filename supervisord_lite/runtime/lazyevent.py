"""An event that costs a flag until somebody waits for it.

A runner has several events that most services never wait on (a backoff cut short,
a log line that makes it ready, the end of an instance being cancelled), and a few
it waits on all the time (its next request, its port going unhealthy). An
``anyio.Event`` on asyncio is about 0.8 KB (an ``asyncio.Event`` and its waiter
deque); this is a flag, plus one future per blocked waiter while it waits, which
with hundreds of services adds up to less than half.
"""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel

__all__ = ["LazyEvent"]


class LazyEvent:
    """``anyio.Event``'s set / is_set / wait, with nothing allocated until a wait blocks.

    A blocked waiter awaits an asyncio future of its own (anyio cancels a task that
    waits on one like any other wait); on another event loop it gets an ``anyio.Event``.
    """

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[None] | anyio.Event] | None = None

    def set(self) -> None:
        if self._flag:
            return
        self._flag = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if isinstance(waiter, anyio.Event):
                waiter.set()
            elif not waiter.done():
                waiter.set_result(None)

    def is_set(self) -> bool:
        return self._flag

    async def wait(self) -> None:
        if self._flag:
            await anyio.lowlevel.checkpoint()  # as anyio.Event.wait does on a set event
            return
        waiter: asyncio.Future[None] | anyio.Event
        try:
            waiter = asyncio.get_running_loop().create_future()
        except RuntimeError:  # not asyncio's loop
            waiter = anyio.Event()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await (waiter.wait() if isinstance(waiter, anyio.Event) else waiter)
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
