"""Where a key is in the manifest's text: line and column for every problem.

tomllib does not say where a value came from, so the text is scanned again, once the
first problem needs a place (a manifest without problems costs nothing). This is a
best effort that knows headers, dotted keys and one level of inline tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from supervisord_lite.core.limits import MAX_PROBLEMS
from supervisord_lite.core.problems import Problem, Severity

KeyPath = tuple[str, ...]  # a key's path from the document root, e.g. ("services", "api", "port")
_LONGEST_MESSAGE = 1000

_KEY_PART = r'(?:"(?:[^"\\\n]++|\\.)*+"|\'[^\'\n]*+\'|[A-Za-z0-9_-]++)'
_DOTTED_KEY = rf"{_KEY_PART}(?:[ \t]*+\.[ \t]*+{_KEY_PART})*+"
_HEADER_LINE = re.compile(rf"[ \t]*+\[\[?[ \t]*+({_DOTTED_KEY})[ \t]*+\]")
_KEY_LINE = re.compile(rf"[ \t]*+({_DOTTED_KEY})[ \t]*+=")
_INLINE_KEY = re.compile(rf"[{{,][ \t]*+({_KEY_PART})[ \t]*+=")


def _split_key(dotted: str) -> KeyPath:
    parts = re.findall(_KEY_PART, dotted)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


class KeyLocator:
    """Line and column of tables and keys, found by scanning the text."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._at: dict[KeyPath, tuple[int, int]] = {}
        self._scanned = False

    def _scan(self) -> None:
        header: KeyPath = ()
        for lineno, line in enumerate(self._text.split("\n"), 1):  # TOML counts lines by "\n" only
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
        self._scanned = True

    def _add(self, path: KeyPath, line: int, col: int) -> None:
        """``path`` and each enclosing table, where first seen. Every prefix of a known
        path is known, so the loop stops at the first known one: linear in the text."""
        for n in range(len(path), 0, -1):
            prefix = path[:n]
            if prefix in self._at:
                break
            self._at[prefix] = (line, col)

    def find(self, path: KeyPath) -> tuple[int, int] | tuple[None, None]:
        """Where ``path`` is, or else its closest enclosing table that the text shows."""
        if not self._scanned:
            self._scan()
        for n in range(len(path), 0, -1):
            if path[:n] in self._at:
                return self._at[path[:n]]
        return None, None


class ProblemLog:
    """The problems found in one manifest, each placed at its key's line and column.

    Past ``limit`` problems are only counted: a file of thousands of mistakes is
    answered with the first ones and a count, in the time one mistake takes.
    """

    def __init__(
        self,
        file: str,
        locator: KeyLocator,
        limit: int = MAX_PROBLEMS,
        source_of: Callable[[KeyPath], tuple[str, KeyLocator]] | None = None,
    ) -> None:
        self.file = file
        self.locator = locator
        self.source_of = source_of  # for merged manifests: the file (and its text) a key came from
        self.limit = limit
        self.items: list[Problem] = []
        self.omitted = 0
        self._omitted_error = False

    def add(self, severity: Severity, path: KeyPath, message: str) -> None:
        if len(self.items) >= self.limit:
            self.omitted += 1
            self._omitted_error |= severity == "error"
            return
        if len(message) > _LONGEST_MESSAGE:  # it quotes a value of up to 128 KiB
            message = message[: _LONGEST_MESSAGE - 3] + "..."
        if len(path) >= 2 and path[0] == "services":
            service, key = path[1], ".".join(path[2:]) or None
        else:
            service, key = None, ".".join(path) or None
        file, locator = self.source_of(path) if self.source_of is not None else (self.file, self.locator)
        line, col = locator.find(path)
        self.items.append(Problem(severity, file, service, key, message, line, col))

    def error(self, path: KeyPath, message: str) -> None:
        self.add("error", path, message)

    def warning(self, path: KeyPath, message: str) -> None:
        self.add("warning", path, message)

    @property
    def has_errors(self) -> bool:
        return self._omitted_error or any(p.is_error for p in self.items)

    def found(self) -> list[Problem]:
        """Every problem kept, in a stable order, and a last one counting those left out."""
        found = sorted(self.items, key=problem_order)
        if self.omitted:
            severity: Severity = "error" if self._omitted_error else "warning"
            more = f"{self.omitted:,} more problems not shown (fix the ones above and check again)"
            found.append(Problem(severity, self.file, None, None, more))
        return found


def problem_order(problem: Problem) -> tuple[bool, int, int]:
    """Errors first, then by line and column; problems without a place last."""
    never = 1 << 62
    line = problem.line if problem.line is not None else never
    return not problem.is_error, line, problem.col if problem.col is not None else never


def key_path(problem: Problem) -> KeyPath:
    """Where in the document a problem's key is: ``services.NAME.`` before a service's."""
    where: KeyPath = tuple(problem.key.split(".")) if problem.key else ()
    if problem.service is not None:
        where = ("services", problem.service, *where)
    return where


def locate(problems: Iterable[Problem], path: Path, text: str) -> list[Problem]:
    """The problems found on a loaded manifest (which knows only its absolute path),
    named like the loader's: the file as the user gave it, with the line and column
    of the key when the text shows them."""
    locator = KeyLocator(text)
    out = []
    for problem in problems:
        if problem.line is None:
            where = key_path(problem)
            line, col = locator.find(where) if where else (None, None)
            problem = replace(problem, file=str(path), line=line, col=col)
        out.append(problem)
    return out
