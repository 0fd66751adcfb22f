"""The daemon's spawner threads: blocking starts off the event loop, in order, bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import anyio
import pytest

from supervisord_lite.runtime.spawner import Spawner, current_spawner

pytestmark = pytest.mark.anyio


async def test_calls_run_off_the_loop_at_most_two_at_once_and_hand_back_results_and_errors() -> None:
    spawner = Spawner(asyncio.get_running_loop(), threads=2)
    loop_thread = threading.get_ident()
    running = 0
    peak = 0
    lock = threading.Lock()
    threads: set[int] = set()

    def call(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            threads.add(threading.get_ident())
        time.sleep(0.005)  # blocking, as a start is
        with lock:
            running -= 1
        if i % 5 == 4:
            raise OSError(i, "cannot run")
        return i * 10

    results: dict[int, object] = {}

    async def one(i: int) -> None:
        try:
            results[i] = await spawner.run(lambda: call(i))
        except OSError as exc:
            results[i] = exc

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, i)
    assert peak == 2
    assert loop_thread not in threads and len(threads) == 2
    for i in range(40):
        if i % 5 == 4:
            assert isinstance(results[i], OSError) and results[i].errno == i  # type: ignore[union-attr]
        else:
            assert results[i] == i * 10


async def test_idle_threads_end_and_the_next_request_starts_one_again() -> None:
    spawner = Spawner(asyncio.get_running_loop(), threads=2, idle=0.05)
    assert await spawner.run(lambda: 1) == 1
    with anyio.fail_after(10):
        while spawner.threads:
            await anyio.sleep(0.01)
    assert await spawner.run(lambda: 2) == 2
    assert spawner.threads == 1


async def test_a_cancelled_caller_still_gets_the_started_result() -> None:
    spawner = Spawner(asyncio.get_running_loop())
    started, release = threading.Event(), threading.Event()
    got: list[str] = []

    def start() -> str:
        started.set()
        release.wait(10)
        return "pid 42"

    async def caller(scope: anyio.CancelScope) -> None:
        with scope:
            got.append(await spawner.run(start))
            await anyio.sleep_forever()  # the cancellation lands here, after the result

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(caller, scope)
        with anyio.fail_after(10):
            while not started.is_set():
                await anyio.sleep(0.005)
        scope.cancel()
        await anyio.sleep(0)  # the cancellation is delivered to the caller, which stays shielded
        assert got == []
        release.set()
    assert got == ["pid 42"]


async def test_one_spawner_per_event_loop() -> None:
    assert current_spawner() is current_spawner()
