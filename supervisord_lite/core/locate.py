"""Where a key is in the manifest's text: line and column for every problem.

tomllib does not say where a value came from, so the text is scanned again. This is
a best effort that knows headers, dotted keys and one level of inline tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from supervisord_lite.core.problems import Problem, Severity

KeyPath = tuple[str, ...]  # a key's path from the document root, e.g. ("services", "api", "port")

_KEY_PART = r'(?:"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|[A-Za-z0-9_-]+)'
_DOTTED_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER_LINE = re.compile(rf"\s*\[\[?\s*({_DOTTED_KEY})\s*\]")
_KEY_LINE = re.compile(rf"\s*({_DOTTED_KEY})\s*=")
_INLINE_KEY = re.compile(rf"[{{,]\s*({_KEY_PART})\s*=")


def _split_key(dotted: str) -> KeyPath:
    parts = re.findall(_KEY_PART, dotted)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


class KeyLocator:
    """Line and column of tables and keys, found by scanning the text."""

    def __init__(self, text: str) -> None:
        self._at: dict[KeyPath, tuple[int, int]] = {}
        header: KeyPath = ()
        for lineno, line in enumerate(text.splitlines(), 1):
            if match := _HEADER_LINE.match(line):
                header = _split_key(match.group(1))
                self._add(header, lineno, match.start(1) + 1)
            elif match := _KEY_LINE.match(line):
                full = header + _split_key(match.group(1))
                self._add(full, lineno, match.start(1) + 1)
                rest = line[match.end() :]
                if rest.lstrip().startswith("{"):
                    for inner in _INLINE_KEY.finditer(rest):
                        self._add(full + _split_key(inner.group(1)), lineno, match.end() + inner.start(1) + 1)

    def _add(self, path: KeyPath, line: int, col: int) -> None:
        for n in range(1, len(path) + 1):
            self._at.setdefault(path[:n], (line, col))

    def find(self, path: KeyPath) -> tuple[int, int] | tuple[None, None]:
        """Where ``path`` is, or else its closest enclosing table that the text shows."""
        for n in range(len(path), 0, -1):
            if path[:n] in self._at:
                return self._at[path[:n]]
        return None, None


class ProblemLog:
    """The problems found in one manifest, each placed at its key's line and column."""

    def __init__(self, file: str, locator: KeyLocator) -> None:
        self.file = file
        self.locator = locator
        self.items: list[Problem] = []

    def add(self, severity: Severity, path: KeyPath, message: str) -> None:
        if len(path) >= 2 and path[0] == "services":
            service, key = path[1], ".".join(path[2:]) or None
        else:
            service, key = None, ".".join(path) or None
        line, col = self.locator.find(path)
        self.items.append(Problem(severity, self.file, service, key, message, line, col))

    def error(self, path: KeyPath, message: str) -> None:
        self.add("error", path, message)

    def warning(self, path: KeyPath, message: str) -> None:
        self.add("warning", path, message)

    @property
    def has_errors(self) -> bool:
        return any(p.is_error for p in self.items)


def locate(problems: Iterable[Problem], path: Path, text: str) -> list[Problem]:
    """The problems found on a loaded manifest (which knows only its absolute path),
    named like the loader's: the file as the user gave it, with the line and column
    of the key when the text shows them."""
    locator = KeyLocator(text)
    out = []
    for problem in problems:
        if problem.line is None:
            where: KeyPath = tuple(problem.key.split(".")) if problem.key else ()
            if problem.service is not None:
                where = ("services", problem.service, *where)
            line, col = locator.find(where) if where else (None, None)
            problem = replace(problem, file=str(path), line=line, col=col)
        out.append(problem)
    return out
