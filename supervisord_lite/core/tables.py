"""Typed reads of one TOML table: a bad value is reported and the default returned.

Unknown keys are reported too (with a did-you-mean hint), so every builder of a
section sees only the keys it knows.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from supervisord_lite.core.durations import format_duration, parse_duration, parse_size
from supervisord_lite.core.locate import KeyPath, ProblemLog
from supervisord_lite.core.wording import describe, did_you_mean

E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")


def is_int(value: object) -> bool:
    """An integer, and not a boolean (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


class TableReader:
    """Typed reads of one TOML table at ``path``. A bad value is reported and the default returned."""

    def __init__(self, problems: ProblemLog, path: KeyPath, data: dict[str, Any], known: Collection[str]) -> None:
        self.problems = problems
        self.path = path
        self.data = data
        for key in data:
            if key not in known:
                hint = did_you_mean(key, known)
                if not hint:
                    hint = f" (allowed: {', '.join(known)})" if len(known) <= 8 else " (see the manifest reference)"
                problems.error((*path, key), f'unknown key "{key}"{hint}')

    def at(self, key: str) -> KeyPath:
        return (*self.path, key)

    def error(self, key: str, message: str) -> None:
        self.problems.error(self.at(key), message)

    def read(self, key: str, default: T, expected: str, convert: Callable[[Any], T]) -> T:
        """``convert`` of the value, or ``default`` when the key is absent or the value bad.

        ``convert`` raises TypeError or ValueError with the message to report (or an
        empty one for "expected {expected}, got ...").
        """
        if key not in self.data:
            return default
        value = self.data[key]
        try:
            return convert(value)
        except (TypeError, ValueError) as exc:
            detail = str(exc)
            self.error(key, detail if detail else f"expected {expected}, got {describe(value)}")
            return default

    def string(self, key: str, default: str) -> str:
        return self.read(key, default, "a string", _as_str)

    def optional_string(self, key: str) -> str | None:
        return self.read(key, None, "a string", _as_str)

    def boolean(self, key: str, default: bool) -> bool:
        return self.read(key, default, "true or false", _as_bool)

    def integer(self, key: str, default: int, low: int | None = None, high: int | None = None) -> int:
        expected = "an integer" + _bounds(low, high)

        def convert(value: Any) -> int:
            if not is_int(value):
                raise ValueError(f"expected {expected}, got {describe(value)}")
            if (low is not None and value < low) or (high is not None and value > high):
                limit = f"outside {low}-{high}" if high is not None else f"below {low}"
                raise ValueError(f"{key} {value} is {limit}")
            return int(value)

        return self.read(key, default, expected, convert)

    def duration(self, key: str, default: float, positive: bool = False, shortest: float = 0.0) -> float:
        """A duration within ``durations.DURATION_RANGE``; ``shortest`` > 0 bounds it from below too."""

        def convert(value: Any) -> float:
            seconds = parse_duration(value)
            if positive and seconds == 0:
                raise ValueError(f"{key} must be more than 0")
            if seconds < shortest:
                raise ValueError(f"{key} {value!r} is shorter than {format_duration(shortest)}, the least allowed")
            return seconds

        return self.read(key, default, "a duration", convert)

    def size(self, key: str, default: int) -> int:
        return self.read(key, default, "a size", parse_size)

    def optional_size(self, key: str) -> int | None:
        return self.read(key, None, "a size", parse_size)

    def choice(self, key: str, kind: type[E], default: E) -> E:
        allowed = [str(member.value) for member in kind]

        def convert(value: Any) -> E:
            if isinstance(value, str) and value in allowed:
                return kind(value)
            hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
            raise ValueError(f"expected one of {', '.join(allowed)}, got {describe(value)}{hint}")

        return self.read(key, default, "", convert)

    def strings(self, key: str) -> tuple[str, ...]:
        def convert(value: Any) -> tuple[str, ...]:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"expected an array of strings, got {describe(value)}")
            return tuple(value)

        return self.read(key, (), "an array of strings", convert)

    def table(self, key: str) -> dict[str, Any] | None:
        def convert(value: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise ValueError(f"expected a table, got {describe(value)}")
            return value

        return self.read(key, None, "a table", convert)


def _bounds(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of {low} or more"
    return ""


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    return value


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe(value)}")
    return value
