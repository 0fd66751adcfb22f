"""How values and suggestions are worded in messages for people."""

from __future__ import annotations

from collections.abc import Iterable

from supervisord_lite.core.budget import spend_hint_comparisons

_LONGEST_TYPO = 100  # nobody mistypes a longer name; comparing one costs time for nothing


def describe(value: object) -> str:
    """A TOML value as a message names it: ``the number 3``, ``an array``."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'the string "{shown}"'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``; did you mean "x"?`` for the closest choice, or "" when none is close (or
    when the manifest's budget of comparisons is spent)."""
    if len(word) > _LONGEST_TYPO:
        return ""
    candidates = list(choices)
    if not spend_hint_comparisons(len(candidates)):
        return ""
    import difflib  # lazy: only a typo needs it

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def first_of(names: Iterable[str], shown: int = 10) -> str:
    """``a, b, c`` or, past ``shown`` names, ``a, b, ... (1,000 in all)``."""
    listed = list(names)
    if len(listed) <= shown:
        return ", ".join(listed)
    return ", ".join(listed[:shown]) + f", ... ({len(listed):,} in all)"


def one_line(text: str) -> str:
    """Control characters shown as escapes, so a command line stays on one output line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shorten(text: str, width: int = 60) -> str:
    """``text`` on one line, cut to ``width`` characters with "..." when longer."""
    shown = one_line(text[: width + 1])
    return shown if len(text) <= width else shown[: width - 3] + "..."
