"""Single values of a manifest: placeholders, commands, port ranges, paths, signals, env tables.

Each reports what is wrong with its value to the ``ProblemLog`` (or raises ValueError
for ``TableReader.read``), naming the value as the user wrote it.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from supervisord_lite.core.locate import KeyPath, ProblemLog
from supervisord_lite.core.model import PortRange
from supervisord_lite.core.tables import is_int
from supervisord_lite.core.wording import describe, did_you_mean

PLACEHOLDERS = ("name", "port", "state_dir")


class Placeholders:
    """Expands ``{port}``, ``{name}``, ``{state_dir}``; ``{{`` and ``}}`` are literal braces."""

    PATTERN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

    def __init__(self, problems: ProblemLog, values: Mapping[str, str | None]) -> None:
        self.problems = problems
        self.values = values

    def expand(self, path: KeyPath, text: str) -> str:
        """``text`` expanded; on a problem it is reported at ``path`` and ``text`` kept as is."""

        def replace(match: re.Match[str]) -> str:
            token = match.group(0)
            if token in ("{{", "}}"):
                return token[0]
            name = match.group(1)
            if name is None:
                raise ValueError(f'unmatched "{token}" in "{text}"; write "{token * 2}" for a literal brace')
            if name not in self.values:
                hint = did_you_mean(name, PLACEHOLDERS)
                raise ValueError(
                    f'unknown placeholder "{{{name}}}" in "{text}"{hint} '
                    "(known: {name}, {port}, {state_dir}; write {{ and }} for literal braces)"
                )
            value = self.values[name]
            if value is None:
                raise ValueError(f'"{{{name}}}" is used in "{text}" but the service has no {name}')
            return value

        try:
            return self.PATTERN.sub(replace, text)
        except ValueError as exc:
            self.problems.error(path, str(exc))
            return text


def split_command(problems: ProblemLog, path: KeyPath, value: Any) -> tuple[str, ...] | None:
    """A string split like a shell (never run by one) or an array of strings."""
    if isinstance(value, str):
        try:
            argv = tuple(shlex.split(value))
        except ValueError as exc:
            problems.error(path, f'cannot split "{value}" like a shell: {exc}')
            return None
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        argv = tuple(value)
    else:
        problems.error(path, f"expected a string or an array of strings, got {describe(value)}")
        return None
    if not argv or not argv[0].strip():
        problems.error(path, "the command is empty")
        return None
    return argv


def parse_ports(problems: ProblemLog, path: KeyPath, value: Any) -> tuple[PortRange, ...]:
    """An array of port ranges ("3000-3099") and single ports (8080 or "8080")."""
    if not isinstance(value, list):
        problems.error(path, f'expected an array of ranges such as ["3000-3099", "8080"], got {describe(value)}')
        return ()
    ranges = []
    for item in value:
        text = str(item) if is_int(item) else item
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text) if isinstance(text, str) else None
        if not match:
            problems.error(path, f'expected a port range such as "3000-3099" or a port, got {describe(item)}')
            continue
        start = int(match.group(1))
        end = int(match.group(2) or start)
        if not (1 <= start <= end <= 65535):
            problems.error(path, f'port range "{item}" must go upwards within 1-65535')
            continue
        ranges.append(PortRange(start, end))
    return tuple(ranges)


def resolve_path(base: Path, value: str) -> Path:
    """``value`` against the manifest's folder ``base``, normalised (an absolute value stays)."""
    return Path(os.path.normpath(base / value))


def parse_signal(value: Any) -> signal.Signals:
    """A signal by name ("TERM", "SIGTERM") or number. :raises ValueError: with the message to report."""
    if is_int(value):
        try:
            return signal.Signals(value)
        except ValueError:
            raise ValueError(f"{value} is not a signal number") from None
    if isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return signal.Signals[name]
        except KeyError:
            hint = did_you_mean(name, [s.name for s in signal.Signals])
            raise ValueError(f'"{value}" is not a signal name{hint}') from None
    raise ValueError(f'expected a signal name such as "SIGTERM" or a number, got {describe(value)}')


def env_table(
    problems: ProblemLog, path: KeyPath, value: Any, expand: Callable[[KeyPath, str], str] | None = None
) -> dict[str, str]:
    """NAME = string, number or boolean (a boolean as "true"/"false"); anything else is reported.

    ``expand`` (placeholder expansion) runs on each value as it is read.
    """
    if not isinstance(value, dict):
        problems.error(path, f"expected a table of NAME = value, got {describe(value)}")
        return {}
    env = {}
    for key, item in value.items():
        if isinstance(item, (str, int, float)):
            text = str(item).lower() if isinstance(item, bool) else str(item)
            env[key] = expand((*path, key), text) if expand is not None else text
        else:
            problems.error((*path, key), f"expected a string or a number, got {describe(item)}")
    return env
