"""The daemon hands freed memory back once a burst of changes is over, not during it."""

from __future__ import annotations

import anyio
import pytest

from supervisord_lite.daemon import background


class Changes:
    """The supervisor's change feed, driven by the test."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def next_change(self) -> anyio.Event:
        return self._event

    def change(self) -> None:
        old, self._event = self._event, anyio.Event()
        old.set()


@pytest.mark.anyio
async def test_trims_after_the_start_and_after_each_quiet_spell_only(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[float] = []
    monkeypatch.setattr(background, "malloc_trim", lambda: lambda pad: trims.append(anyio.current_time()) or 1)
    sup = Changes()
    quiet = 1.0  # 20 times the gap between the changes of the burst below
    async with anyio.create_task_group() as tg:
        started = anyio.current_time()
        tg.start_soon(background.trim_after_bursts, sup, quiet)
        with anyio.fail_after(10):
            while not trims:
                await anyio.sleep(0.01)
        assert trims[0] - started >= quiet * 0.9  # once after the start, when it went quiet

        last_change = anyio.current_time()
        for _ in range(5):  # a burst: a change every 0.05 s, shorter than the quiet spell
            sup.change()
            last_change = anyio.current_time()
            await anyio.sleep(0.05)
        assert len(trims) == 1  # nothing while the burst goes on
        with anyio.fail_after(10):
            while len(trims) < 2:
                await anyio.sleep(0.01)
        assert trims[1] - last_change >= quiet * 0.9
        await anyio.sleep(quiet * 3)
        assert len(trims) == 2  # and nothing while nothing changes
        tg.cancel_scope.cancel()


