"""Matching service output against ``ready.log``, in time linear in the line.

Every output line of a service with a log-readiness pattern is matched on the event
loop, as it arrives. Python's ``re`` backtracks: ``(a+)+$`` against thirty ``a`` and
a ``!`` takes seconds to minutes, and the whole daemon would stand still meanwhile.
RE2 (google-re2) runs an automaton instead: no pattern and no line can make a match
cost more than a pass over the line, so matching stays on the loop, with no thread
and no time budget. The manifest check (``core.logpattern``) refuses what RE2 cannot
compile, so ``svc check`` already says so.

RE2 (its C++ library, ~3 MB resident) is loaded with the first pattern: a daemon
whose services have none never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from supervisord_lite.runtime.logs import get_logger

__all__ = ["LogPattern", "compile_log_pattern"]

_log = get_logger(component="readiness")


class LogPattern:
    """A compiled ``ready.log`` pattern; ``search(line)`` is truthy when the line matches."""

    __slots__ = ("_search", "pattern")

    def __init__(self, pattern: str, search: Callable[[str], object] | None) -> None:
        self.pattern = pattern
        self._search = search

    def search(self, line: str) -> bool:
        return self._search is not None and self._search(line) is not None


if TYPE_CHECKING:
    import re2


def _options(re2: Any) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refusal is reported here, not printed by the C++ library
    options.never_capture = True  # only "does it match" is asked: no submatch bookkeeping
    return options


def compile_log_pattern(pattern: str, service: str = "") -> LogPattern:
    """``pattern`` compiled with RE2. Never raises: a pattern RE2 refuses (the manifest
    check lets none through) is logged and matches no line, so the service ends in
    ``failed`` at its ready_timeout instead of taking the daemon down."""
    import re2

    try:
        return LogPattern(pattern, re2.compile(pattern, _options(re2)).search)
    except re2.error as exc:
        _log.error("ready.log pattern refused by RE2; no line will match", service=service, pattern=pattern, error=str(exc))
        return LogPattern(pattern, None)
