"""File watching for `watch = [...]` (development restarts), on watchfiles.

Patterns are globs relative to the manifest's folder (``src/**/*.py``); ``**``
matches any number of folders. Only the folders the patterns can match in are
watched, and nothing at all runs for a service without ``watch``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex for a relative glob: ``*`` and ``?`` stay in one folder, ``**`` spans folders."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(relative: str, patterns: Sequence[str], ignore: Sequence[str] = ()) -> bool:
    rel = relative.replace("\\", "/")
    if any(glob_regex(p).match(rel) for p in ignore):
        return False
    return any(glob_regex(p).match(rel) for p in patterns)


def watch_roots(base: Path, patterns: Sequence[str]) -> list[Path]:
    """The deepest existing folder before the first wildcard of each pattern."""
    roots: set[Path] = set()
    for pattern in patterns:
        parts = Path(pattern).parts
        fixed: list[str] = []
        for part in parts[:-1]:
            if any(c in part for c in "*?["):
                break
            fixed.append(part)
        root = base.joinpath(*fixed)
        while not root.exists() and root != base:
            root = root.parent
        roots.add(root)
    # a root inside another root is redundant
    return sorted(r for r in roots if not any(o != r and o in r.parents for o in roots))


def change_summary(paths: Sequence[str]) -> str:
    """What a watch restart says in `svc status`: ``src/app.py changed``, or
    ``src/app.py and 2 other files changed``."""
    if len(paths) == 1:
        return f"{paths[0]} changed"
    others = len(paths) - 1
    return f"{paths[0]} and {others} other file{'s' if others != 1 else ''} changed"


async def changes(base: Path, patterns: Sequence[str], ignore: Sequence[str] = (), debounce_ms: int = 200) -> AsyncIterator[list[str]]:
    """Yield the relative paths of each debounced batch of changes that match."""
    from watchfiles import awatch

    roots = watch_roots(base, patterns)
    async for batch in awatch(*roots, debounce=debounce_ms, step=50, recursive=True, yield_on_timeout=False):
        hits = []
        for _change, path in batch:
            try:
                rel = Path(path).resolve().relative_to(base).as_posix()
            except ValueError:
                continue
            if matches(rel, patterns, ignore):
                hits.append(rel)
        if hits:
            yield sorted(set(hits))
