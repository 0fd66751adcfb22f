"""What `svc down` says about what it did (its fast path and the click command alike).

Only the standard library: the console script's quick `svc down` imports this."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def down_lines(result: Mapping[str, Any], names: Sequence[str] = ()) -> list[str]:
    """``stopped 3 services``, or ``nothing was running``; then, when a later `up`,
    `restart` or `down` took some over before this one was done with them, which ones
    (an older daemon does not say: nothing is added)."""
    stopped: list[str] = list(result.get("stopped", []))
    taken: list[str] = list(result.get("taken_over", []))
    lines = []
    if stopped:
        count = f"{len(stopped)} service{'' if len(stopped) == 1 else 's'}"
        lines.append(f"stopped {count}" + (f": {', '.join(stopped)}" if names else ""))
    elif taken:
        lines.append("stopped nothing")
    else:
        lines.append("nothing was running" + (f" of {', '.join(names)}" if names else ""))
    if taken:
        lines.append(f"taken over by a later command before this down was done with them: {', '.join(taken)}")
    return lines
