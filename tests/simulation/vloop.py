"""An asyncio event loop on virtual time: whenever nothing is ready to run, the clock
jumps to the next timer instead of waiting for it.

anyio's sleeps, deadlines and ``current_time()`` all follow the loop's clock, so the
real supervisor code runs unchanged on it: a 60 s backoff takes microseconds, and the
order of events is exactly reproducible. Nothing real may happen in a simulation
(threads, sockets, child processes): the ``FakeIO`` stands in for the machine.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Deadlock(RuntimeError):
    """Every task waits for something that no timer and no other task will bring."""


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)  # the loop's own wake-up pipe is the only real descriptor
        if events or timeout == 0:
            return events
        loop = self.loop
        assert loop is not None
        if loop.idle_waiters:  # everything is blocked at this instant: tell who asked, first
            waiters, loop.idle_waiters = loop.idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            return []
        if timeout is None:
            raise Deadlock("every task waits and no timer is set")
        loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` only moves when every task waits on a timer."""

    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = 0.0
        self.idle_waiters: list[asyncio.Future[None]] = []

    def time(self) -> float:
        return self.now

    async def idle(self) -> None:
        """Return once every other task waits (for an event or a later timer): the
        simulated world is quiet at this instant."""
        waiter = self.create_future()
        self.idle_waiters.append(waiter)
        await waiter


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` on a fresh virtual-time loop (like ``anyio.run``)."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        _cancel_all(loop)
        loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
