"""LazyEvent: anyio.Event's behaviour, allocated only when a wait blocks."""

from __future__ import annotations

import anyio
import pytest

from supervisord_lite.runtime.lazyevent import LazyEvent

pytestmark = pytest.mark.anyio


async def test_a_set_event_returns_at_once_and_stays_set() -> None:
    event = LazyEvent()
    assert not event.is_set()
    event.set()
    event.set()
    assert event.is_set()
    with anyio.fail_after(5):
        await event.wait()
        await event.wait()


async def test_every_waiter_wakes_when_it_is_set() -> None:
    event = LazyEvent()
    woke: list[int] = []

    async def waiter(i: int) -> None:
        await event.wait()
        woke.append(i)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(waiter, i)
            await anyio.wait_all_tasks_blocked()
            assert woke == []
            event.set()
    assert sorted(woke) == [0, 1, 2]


async def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    event = LazyEvent()
    woke: list[str] = []
    doomed = anyio.CancelScope()

    async def waiter(name: str, scope: anyio.CancelScope | None) -> None:
        if scope is None:
            await event.wait()
        else:
            with scope:
                await event.wait()
        woke.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, "kept", None)
            tg.start_soon(waiter, "cancelled", doomed)
            await anyio.wait_all_tasks_blocked()
            doomed.cancel()
            await anyio.wait_all_tasks_blocked()
            assert woke == ["cancelled"], "the cancelled wait ends; the other goes on waiting"
            event.set()
    assert woke == ["cancelled", "kept"]
