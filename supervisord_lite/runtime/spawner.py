"""Blocking calls that start programs, run on two threads of the daemon's own.

Starting a program blocks its caller until the child has exec'd (a few milliseconds per
Python service under load); on the event loop, 200 starts at once would stall every probe
and readiness check behind them. ``subprocess``'s ``fork_exec`` releases the GIL, so from
a thread the loop keeps running.

Why not ``anyio.to_thread.run_sync`` for each start: its machinery per call (a capacity
limiter, a cancel scope, the hand-off to an idle worker) cost the loop about a third as
much as the start itself during a burst of a thousand. Here a request is one queue put
and one future, and a thread still busy takes the next request without sleeping.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from anyio.lowlevel import RunVar

T = TypeVar("T")

#: threads per event loop: more only fight the loop for the GIL
THREADS = 2
#: seconds a thread waits for work before it ends (the next request starts one again)
IDLE_SECONDS = 10.0

_Request = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class Spawner:
    """Runs blocking calls for one event loop on up to ``THREADS`` threads, in order of arrival."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threads: int = THREADS, idle: float = IDLE_SECONDS) -> None:
        self._loop = loop
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._max_threads = threads
        self._idle = idle
        self.threads = 0  # alive now

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` on a spawner thread. Not cancellable once asked (like
        ``anyio.to_thread.run_sync``): a process half-started must not be lost."""
        future: asyncio.Future[T] = self._loop.create_future()
        self._requests.put((call, future))
        with self._lock:
            if self.threads < self._max_threads:
                self.threads += 1
                threading.Thread(target=self._work, name="svc-spawner", daemon=True).start()
        with anyio.CancelScope(shield=True):
            return await future

    def _work(self) -> None:
        while True:
            try:
                call, future = self._requests.get(timeout=self._idle)
            except queue.Empty:
                with self._lock:  # a request put before this check is taken; one after starts a thread
                    if self._requests.empty():
                        self.threads -= 1
                        return
                continue
            try:
                result, error = call(), None
            except BaseException as exc:  # noqa: BLE001 (handed to the caller, whatever it is)
                result, error = None, exc
            try:
                self._loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits for it any more
                pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_SPAWNER: RunVar[Spawner] = RunVar("spawner")


def current_spawner() -> Spawner:
    """The spawner of the running event loop (made on first use)."""
    spawner = _SPAWNER.get(None)
    if spawner is None:
        spawner = Spawner(asyncio.get_running_loop())
        _SPAWNER.set(spawner)
    return spawner
