"""Bounds on a manifest's TOML text, checked before tomllib parses it, and on the data after.

tomllib recurses once per nested array or inline table (a deep document ends in
RecursionError) and spends time and memory quadratic in the parts of a dotted key
(20,000 parts: seconds and gigabytes). So the text is scanned first, in one linear
pass: nesting depth, parts of each dotted key and table header, and the number of
keys, of arrays and inline tables, and of commas (so of values) in the whole file.

The scan is one regular expression applied repeatedly: it skips strings, comments
and values in C, and stops only at a key, a table header, a bracket, a comma, or a
dotted run too long to be a key, each of them counted against a limit, so the Python
loop runs a bounded number of times. It follows valid TOML exactly; on invalid TOML
it may stop early, and tomllib, which stops at the first error too, reports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from supervisord_lite.core.limits import (
    MAX_COMMAS,
    MAX_CONTAINERS,
    MAX_INT,
    MAX_ITEMS,
    MAX_KEY_PARTS,
    MAX_KEYS,
    MAX_NESTING,
    MAX_STRING,
    MIN_INT,
    plural,
)
from supervisord_lite.core.locate import KeyPath

# One part of a dotted key: bare, "basic" or 'literal'.
_PART = r"""(?:[A-Za-z0-9_-]++|"(?:[^"\\\n]++|\\.)*+"|'[^'\n]*+')"""
_SEP = r"[ \t]*+\.[ \t]*+"
_KEY = _PART + "(?:" + _SEP + _PART + "){0,%d}+" % (MAX_KEY_PARTS - 1)

# Everything the scan steps over. Each alternative consumes what it starts, so the
# possessive loop never backtracks; a bare word or quoted string is stepped over only
# when it is not a key (not followed by "=" or by more dotted parts than a key has).
_SKIP = (
    "(?:"
    r'"""(?:[^"\\]++|\\[\s\S]|"(?!""))*+(?:"""(?:"{0,2})|\\?\Z)'  # multi-line basic string
    r"|'''(?:[^']++|'(?!''))*+(?:'''(?:'{0,2})|\Z)"  # multi-line literal string
    "|" + _KEY + r"(?![ \t]*+(?:\.[ \t]*+" + _PART + "|=))"  # a value, or a word or string that is no key
    + r'|"(?:[^"\\\n]++|\\.)*+\\?(?=\n|\Z)'  # a basic string left open (tomllib reports it)
    r"|'[^'\n]*+(?=\n|\Z)"  # a literal string left open
    r"|\#[^\n]*+"  # a comment
    r"|[ \t]++(?!\[)"  # blanks, except those before a bracket (a header may follow)
    r"|[^\"'\#\[\]{}=,A-Za-z0-9_ \t-]++"  # anything else: newlines, dots, signs
    ")*+"
)
_TOKEN = re.compile(
    _SKIP
    + "(?:"
    + r"(?P<header>(?<![^\n])[ \t]*+\[\[?[ \t]*+(?P<table>" + _KEY + r")[ \t]*+\]\]?)"
    + "|(?P<key>" + _KEY + r")[ \t]*+="
    + "|(?P<long>" + _PART + "(?:" + _SEP + _PART + "){%d})" % MAX_KEY_PARTS
    + r"|[ \t]*+(?P<open>[\[{])"
    + r"|(?P<close>[\]}])"
    + "|(?P<comma>,)"
    + "|(?P<equals>=)"
    + r"|(?P<end>\Z)"
    + r"|(?P<other>[\s\S])"
    + ")"
)
_PARTS = re.compile(_PART)

_TOO_MANY_KEYS = f"more than {MAX_KEYS:,} keys (every part of a dotted key or table name counted), the limit"
_TOO_LONG_KEY = f"a dotted key or table name has more than {MAX_KEY_PARTS} parts, the limit"
_TOO_DEEP = f"arrays and inline tables are nested more than {MAX_NESTING} deep, the limit"
_TOO_MANY_CONTAINERS = f"more than {MAX_CONTAINERS:,} arrays and inline tables, the limit"
_TOO_MANY_COMMAS = (
    f"more than {MAX_COMMAS:,} values in arrays and inline tables (counted by their commas), the limit"
)


@dataclass(frozen=True, slots=True)
class Overflow:
    """The first bound the text breaks: a message for people and where it is."""

    message: str
    offset: int

    def position(self, text: str) -> tuple[int, int]:
        """Line and column (both from 1) of ``offset`` in ``text``."""
        line_start = text.rfind("\n", 0, self.offset) + 1
        return text.count("\n", 0, self.offset) + 1, self.offset - line_start + 1


def check_toml_bounds(text: str) -> Overflow | None:
    """The first bound ``text`` breaks, or None when tomllib may parse it."""
    depth = keys = containers = commas = 0
    pos = 0
    while True:
        match = _TOKEN.match(text, pos)
        assert match is not None  # the last alternatives match anywhere
        kind = match.lastgroup or "end"
        at, pos = match.start(kind), match.end()
        if kind == "header":
            at += match.group("header").index("[")
            if depth > 0:  # "[x]" at the start of a line inside an array: a bracket
                kind, pos = "open", at + 1
        if kind == "end":
            return None
        if kind in ("header", "key", "equals"):
            key = "" if kind == "equals" else match.group("table" if kind == "header" else kind)
            keys += len(_PARTS.findall(key)) if "." in key else 1
            if keys > MAX_KEYS:
                return Overflow(_TOO_MANY_KEYS, at)
        elif kind == "long":
            return Overflow(_TOO_LONG_KEY, at)
        elif kind == "open":
            depth += 1
            containers += 1
            if depth > MAX_NESTING:
                return Overflow(_TOO_DEEP, at)
            if containers > MAX_CONTAINERS:
                return Overflow(_TOO_MANY_CONTAINERS, at)
        elif kind == "comma":
            commas += 1
            if commas > MAX_COMMAS:
                return Overflow(_TOO_MANY_COMMAS, at)
        elif kind == "close":
            if depth == 0:
                return None  # a bracket that closes nothing: invalid TOML, tomllib says where
            depth -= 1


def check_data_bounds(data: dict[str, Any]) -> Iterator[tuple[KeyPath, str]]:
    """Each value of the parsed document outside the manifest's bounds, with its key
    path: integers beyond 64 bits, over-long strings and keys, arrays and tables with
    too many items. Iterative, so no nesting can exhaust the stack."""
    stack: list[tuple[KeyPath, dict[str, Any] | list[Any]]] = [((), data)]
    while stack:
        path, container = stack.pop()
        if len(container) > MAX_ITEMS:
            yield path, _too_many(path, container)
        if isinstance(container, dict):
            for key, item in container.items():
                if len(key) > MAX_STRING:
                    yield path, f"a key of {plural(len(key), 'character')}: at most {MAX_STRING:,} are allowed"
                elif isinstance(item, (dict, list)):
                    stack.append(((*path, key), item))
                elif (problem := _scalar_problem(item)) is not None:
                    yield (*path, key), problem
        else:
            for item in container:
                if isinstance(item, (dict, list)):
                    stack.append((path, item))
                elif (problem := _scalar_problem(item)) is not None:
                    yield path, problem


def _too_many(path: KeyPath, container: dict[str, Any] | list[Any]) -> str:
    if isinstance(container, list):
        return f"an array of {plural(len(container), 'item')}: an array holds at most {MAX_ITEMS:,}"
    if path == ("services",):
        return f"{plural(len(container), 'service')}: a manifest holds at most {MAX_ITEMS:,}"
    return f"{plural(len(container), 'key')}: a table holds at most {MAX_ITEMS:,}"


def _scalar_problem(value: object) -> str | None:
    if type(value) is str and len(value) > MAX_STRING:
        return f"a string of {plural(len(value), 'character')}: at most {MAX_STRING:,} are allowed"
    if type(value) is int and not MIN_INT <= value <= MAX_INT:
        return "an integer beyond 64 bits (TOML integers go from -2^63 to 2^63-1)"
    return None
