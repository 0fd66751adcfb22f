"""Which regular expressions ``ready.log`` accepts: the syntax Python's ``re`` and RE2 share.

The daemon matches service output with RE2 (``runtime/logmatch.py``), whose time is
linear in the line: no pattern can stall the event loop the way a backtracking
engine does on ``(a+)+$``. ``svc check`` must refuse every pattern RE2 would not
compile, and the core stays free of native libraries, so the check is done here
without RE2: Python's ``re`` reports syntax errors (with their position), then a
scan of the pattern refuses what only Python has: backreferences, lookaround,
conditionals, atomic groups and possessive quantifiers, comments, the x/a/u/L flags,
``\\Z``, ``\\u``/``\\U``/``\\N`` escapes, and the few spellings both accept with
different meanings (``{,n}``, ``[[:alpha:]]``). Counts follow RE2's limits: at most
1000 for ``{n,m}``, nested counts multiplied included, and a bounded expanded size.
A test compiles with RE2 every pattern this accepts.
"""

from __future__ import annotations

import re
import warnings

__all__ = ["MAX_EXPANDED_SIZE", "MAX_REPEAT", "pattern_problem"]

MAX_REPEAT = 1000  # RE2's limit on a count, and on nested counts multiplied together
# atoms once counted repetitions are written out, a [...] class weighing its length: RE2's
# memory bound let through 17 000 (?i)[^a-z] to 700 000 plain letters, so this leaves a margin
MAX_EXPANDED_SIZE = 10_000

_OCTAL = "01234567"
_FLAGS = "ims"  # inline flags RE2 knows (Python's a, u, L and x it does not)
_CLASS_BACKSLASH = "\\b inside [...] (a backspace) is not supported: write \\x08"


class _Refused(Exception):
    """A construct RE2 does not have; the message says what to write instead."""


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a ``ready.log`` pattern, or None when RE2 and Python agree on it."""
    try:
        with warnings.catch_warnings():  # "possible nested set" and the like: the scan decides
            warnings.simplefilter("ignore")
            re.compile(pattern)
    except (re.error, ValueError, OverflowError, RecursionError) as exc:  # ValueError: (?au) flags
        return f"invalid regular expression {pattern!r}: {exc}"
    try:
        _Scan(pattern).run()
    except _Refused as exc:
        return f"{pattern!r} cannot run on RE2, the linear-time engine log patterns are matched with: {exc}"
    return None


class _Frame:
    """One open group: its expanded size, the largest count product inside it, and the
    atom just read (a quantifier may still apply to it)."""

    __slots__ = ("last", "product", "size")

    def __init__(self) -> None:
        self.size = 0
        self.product = 1
        self.last: tuple[int, int] | None = None  # (size, count product) of the previous atom

    def flush(self) -> None:
        if self.last is not None:
            self.size += self.last[0]
            self.product = max(self.product, self.last[1])
            self.last = None


class _Scan:
    """A pass over a pattern Python's ``re`` already compiled (so it is well formed)."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.frames = [_Frame()]

    def peek(self, offset: int = 0) -> str:
        at = self.i + offset
        return self.p[at] if 0 <= at < len(self.p) else ""

    def run(self) -> None:
        while self.i < len(self.p):
            c = self.p[self.i]
            if c == "\\":
                self.escape()
            elif c == "[":
                self.char_class()
            elif c == "(":
                self.open_group()
            elif c == ")":
                self.close_group()
            elif c == "|":
                self.frames[-1].flush()
                self.i += 1
            elif c in "*+?":
                self.i += 1
                self.quantified(None)
            elif c == "{" and (bounds := self.count()) is not None:
                self.quantified(bounds)
            else:
                self.atom(1)
                self.i += 1
        self.frames[-1].flush()
        if self.frames[0].size > MAX_EXPANDED_SIZE:
            raise _Refused(f"it is too large: more than {MAX_EXPANDED_SIZE} elements once its counts are written out")

    # -------------------------------------------------------------- atoms

    def atom(self, size: int) -> None:
        frame = self.frames[-1]
        frame.flush()
        frame.last = (size, 1)

    def escape(self) -> None:
        c = self.peek(1)
        if c == "Z":
            raise _Refused("\\Z is not supported: write $ (a line is matched without its newline)")
        if c in "uUN":
            raise _Refused(f"\\{c} escapes are not supported: write the character itself")
        if c in "123456789":
            if c in _OCTAL and _is(self.peek(2), _OCTAL) and _is(self.peek(3), _OCTAL):
                self.i += 4  # a three-digit octal escape: the same in both
                self.atom(1)
                return
            raise _Refused(f"backreferences (\\{c}) are not supported")
        if c and not c.isascii():
            raise _Refused(f"\\{c} is not supported: write {c} without the backslash")
        self.i += 2
        if c in "0x":  # \0 and up to two more octal digits; \x and two hex digits
            self.i += _prefix_len(self.p, self.i, _OCTAL if c == "0" else "0123456789abcdefABCDEF", 2)
        if c in "AbB":
            self.frames[-1].flush()  # an anchor: nothing to repeat
            return
        self.atom(1)

    def char_class(self) -> None:
        start = self.i
        self.i += 1
        if self.peek() == "^":
            self.i += 1
        if self.peek() == "]":
            self.i += 1  # a ] first is a literal in both
        while self.peek() not in ("]", ""):
            c = self.peek()
            if c == "[" and self.peek(1) == ":":
                raise _Refused(
                    "[: inside [...] is not supported (RE2 reads [[:alpha:]] as a class, Python as text): write \\[: or [a-zA-Z]"
                )
            if c == "\\":
                self.class_escape()
            else:
                self.i += 1
        self.i += 1
        self.atom(1 + self.i - start)

    def class_escape(self) -> None:
        c = self.peek(1)
        if c == "b":
            raise _Refused(_CLASS_BACKSLASH)
        if c in "uUN":
            raise _Refused(f"\\{c} escapes are not supported: write the character itself")
        if c in "1234567" and not _is(self.peek(2), _OCTAL):
            raise _Refused(f"\\{c} inside [...] (an octal escape) is not supported: write \\x0{c}")
        if c and not c.isascii():
            raise _Refused(f"\\{c} is not supported: write {c} without the backslash")
        self.i += 2

    # -------------------------------------------------------------- groups

    def open_group(self) -> None:
        rest = self.p[self.i + 1 : self.i + 4]
        if rest.startswith("?"):
            kind = rest[1:2]
            if rest.startswith(("?=", "?!", "?<=", "?<!")):
                raise _Refused("lookahead (?=...) (?!...) and lookbehind (?<=...) (?<!...) are not supported")
            if rest.startswith("?P="):
                raise _Refused("backreferences (?P=name) are not supported")
            if kind == "(":
                raise _Refused("conditionals (?(...)...) are not supported")
            if kind == ">":
                raise _Refused("atomic groups (?>...) are not supported")
            if kind == "#":
                raise _Refused("comments (?#...) are not supported: remove it")
            if kind not in (":", "P", "<"):
                self.check_flags()
        self.frames[-1].flush()
        self.frames.append(_Frame())
        self.i += 1
        if self.peek() == "?":  # skip to the group's body: (?:  (?P<name>  (?i:  (?i)
            self.i += 1
            while self.peek() not in (":", ")", ">", ""):
                self.i += 1
            if self.peek() == ")":  # (?i) sets flags: it is no group
                self.frames.pop()
            self.i += 1

    def check_flags(self) -> None:
        at = self.i + 2
        while at < len(self.p) and self.p[at] not in ":)":
            flag = self.p[at]
            if flag != "-" and flag not in _FLAGS:
                what = "verbose mode (?x)" if flag == "x" else f"the flag (?{flag})"
                raise _Refused(f"{what} is not supported: the flags are {', '.join(_FLAGS)}")
            at += 1

    def close_group(self) -> None:
        self.i += 1
        inner = self.frames.pop()
        inner.flush()
        frame = self.frames[-1]
        frame.flush()
        frame.last = (max(1, inner.size), inner.product)

    # -------------------------------------------------------------- repetition

    def count(self) -> tuple[int, int | None] | None:
        """The ``{m,n}`` quantifier at the cursor as (low, high or None), or None when the
        brace is a literal. ``{,n}`` is refused: Python reads {0,n}, RE2 a literal."""
        match = _COUNT.match(self.p, self.i)
        if match is None:
            return None
        low, comma, high = match.groups()
        if not low and not comma:
            return None  # {} is a literal in both
        if not low:
            meaning = f"{{0,{high}}}" if high else "*"
            raise _Refused(f"{match.group()} means {meaning} to Python and is text to RE2: write {meaning}")
        if _leading_zero(low) or _leading_zero(high):
            raise _Refused(f"{match.group()} is text to RE2 (a count with a leading zero): write it without")
        if not comma:
            return int(low), int(low)
        return int(low), int(high) if high else None

    def quantified(self, bounds: tuple[int, int | None] | None) -> None:
        """A quantifier at the cursor (``*+?`` already consumed; ``{m,n}`` not yet)."""
        frame = self.frames[-1]
        if bounds is not None:
            self.i = _COUNT.match(self.p, self.i).end()  # type: ignore[union-attr]
        if self.peek() == "+":
            raise _Refused("possessive quantifiers (*+, ++, ?+, {m,n}+) are not supported")
        if self.peek() == "?":
            self.i += 1  # lazy: the same in both
        if frame.last is None or bounds is None:
            return
        low, high = bounds
        if low > MAX_REPEAT or (high is not None and high > MAX_REPEAT):
            raise _Refused(f"counts above {MAX_REPEAT} are not supported")
        times = high if high is not None else low
        size, product = frame.last
        product *= max(1, times)
        if product > MAX_REPEAT:
            raise _Refused(f"nested counts may multiply to at most {MAX_REPEAT}")
        frame.last = (size * max(1, times if high is not None else low + 1), product)


_COUNT = re.compile(r"\{([0-9]*)(,?)([0-9]*)\}")  # ASCII digits, as Python's parser reads them


def _is(c: str, chars: str) -> bool:
    """Is ``c`` one of ``chars`` (and not the empty string past the end of the pattern)?"""
    return bool(c) and c in chars


def _leading_zero(digits: str) -> bool:
    return len(digits) > 1 and digits.startswith("0")


def _prefix_len(text: str, start: int, allowed: str, limit: int) -> int:
    n = 0
    while n < limit and start + n < len(text) and text[start + n] in allowed:
        n += 1
    return n
