"""The work one manifest check may spend on its costly checks.

"Did you mean" compares a misspelt name with every choice, and checking a
``ready.log`` pattern compiles it; both cost time per character. A manifest of
thousands of misspelt names or of large patterns would make ``svc check`` (and a
reload in the daemon) take seconds, so each check spends from a budget set for
the whole manifest. Outside a check (``manifest_budget`` not entered) nothing is
counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from supervisord_lite.core.limits import HINT_BUDGET, MAX_PATTERNS_TOTAL


@dataclass
class _Budget:
    hint_comparisons: int = HINT_BUDGET
    pattern_characters: int = MAX_PATTERNS_TOTAL


_current: ContextVar[_Budget | None] = ContextVar("manifest_budget", default=None)


@contextmanager
def manifest_budget() -> Iterator[None]:
    """Within the block, costly checks spend from one fresh budget."""
    token = _current.set(_Budget())
    try:
        yield
    finally:
        _current.reset(token)


def spend_hint_comparisons(count: int) -> bool:
    """True when ``count`` more "did you mean" comparisons may be made (and they are counted)."""
    budget = _current.get()
    if budget is None:
        return True
    if budget.hint_comparisons < count:
        return False
    budget.hint_comparisons -= count
    return True


def spend_pattern_characters(count: int) -> bool:
    """True when a pattern of ``count`` characters may still be compiled (and it is counted)."""
    budget = _current.get()
    if budget is None:
        return True
    if budget.pattern_characters < count:
        return False
    budget.pattern_characters -= count
    return True
