"""What `svc down` says about what it did (its fast path and the click command alike).

Only the standard library: the console script's quick `svc down` imports this."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def down_lines(result: Mapping[str, Any], names: Sequence[str] = ()) -> list[str]:
    """What it stopped: ``stopped 3 services``, ``stopped nothing`` (a later command took
    everything over first), or ``nothing was running``."""
    stopped: list[str] = list(result.get("stopped", []))
    if stopped:
        count = f"{len(stopped)} service{'' if len(stopped) == 1 else 's'}"
        return [f"stopped {count}" + (f": {', '.join(stopped)}" if names else "")]
    if result.get("taken_over"):
        return ["stopped nothing"]
    return ["nothing was running" + (f" of {', '.join(names)}" if names else "")]


def overtaken_line(result: Mapping[str, Any]) -> str | None:
    """For the error stream, when a later `up`, `restart` or `down` took over services this
    down was to stop: they may run again, so the down exits 1 (a daemon from before this
    answer does not say: None)."""
    taken: list[str] = list(result.get("taken_over", []))
    if not taken:
        return None
    return f"taken over by a later command before this down was done with them: {', '.join(taken)}"
