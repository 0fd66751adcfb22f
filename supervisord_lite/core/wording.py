"""How values and suggestions are worded in messages for people."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
    """``; did you mean "x"?`` for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def one_line(text: str) -> str:
    """Control characters shown as escapes, so a command line stays on one output line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
