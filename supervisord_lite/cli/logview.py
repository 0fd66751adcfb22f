"""What `svc logs` and `svc up --attach` print, from the lines of the services' log files.

Pure functions on text, no I/O: reading a line of ``state_dir/logs/NAME.log``
(``parse_line``), merging several services' lines into one stream ordered by time
(``merge``), the prefix and colours (``format_line``), when colour is wanted
(``use_colour``), what ``--since`` means (``parse_since``), and which services a
selector such as a tier name stands for (``select``).

The daemon writes each line as ``2026-11-25T23:59:01.123Z TEXT`` (UTC, milliseconds:
runtime/logs.py ``format_timestamp``), and its own lines ("marks") as
``--- svc: TEXT ---``. Timestamps of that fixed width sort as strings, so lines are
merged and filtered by comparing the stamps themselves.
"""

from __future__ import annotations

import heapq
import re
import time
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from supervisord_lite.core.durations import parse_duration

#: The decoration of the daemon's own lines in a service log (runtime/logs.py writes them).
MARK_PREFIX = "--- svc: "
MARK_SUFFIX = " ---"

_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)(?: |$)")
STAMP_WIDTH = len("2026-11-25T23:59:01.123Z")

#: Foreground colours for service names (as compose picks them: no red, which means trouble).
PALETTE = (36, 33, 32, 35, 34, 96, 93, 92, 95, 94)
_RESET = "\x1b[0m"
_MARK_STYLE = "\x1b[2;3m"  # dim italic: the supervisor speaking, not the service

SINCE_HINT = 'a duration such as "10m" or "1h30m", or a date and time such as "2026-11-29T10:00"'


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of one service's log."""

    stamp: str  # "2026-11-25T23:59:01.123Z"; a line without one carries the previous line's
    service: str
    text: str
    mark: bool = False  # written by the supervisor (a state change), not by the service


def parse_line(service: str, raw: str, previous_stamp: str = "") -> LogLine:
    """A line as the daemon wrote it; one without a timestamp (not written by the daemon)
    is placed at ``previous_stamp``, so it stays after the line it followed."""
    match = _STAMP.match(raw)
    if match is None:
        return LogLine(previous_stamp, service, raw)
    text = raw[match.end():]
    if text.startswith(MARK_PREFIX) and text.endswith(MARK_SUFFIX) and len(text) >= len(MARK_PREFIX) + len(MARK_SUFFIX):
        return LogLine(match.group(1), service, mark_text(text[len(MARK_PREFIX):-len(MARK_SUFFIX)]), mark=True)
    return LogLine(match.group(1), service, text)


def mark_text(inner: str) -> str:
    """A supervisor line for people: ``exited: exited with code 0`` says its state once."""
    state, sep, rest = inner.partition(": ")
    if sep and rest.startswith(state):
        return rest
    return inner


def parse_lines(service: str, raws: Iterable[str]) -> Iterator[LogLine]:
    """``parse_line`` over a file's lines in order (each stampless line takes the last stamp)."""
    stamp = ""
    for raw in raws:
        line = parse_line(service, raw, stamp)
        stamp = line.stamp
        yield line


def merge(streams: Iterable[Iterable[LogLine]]) -> Iterator[LogLine]:
    """One stream ordered by time from streams that each are; equal times keep the order
    of the streams given, and each stream's own order."""
    return heapq.merge(*streams, key=lambda line: line.stamp)


# ----------------------------------------------------------------------------- showing


@dataclass(frozen=True, slots=True)
class Style:
    """How lines are shown: the name column's width, colours, timestamps, the prefix."""

    width: int
    colour: bool = False
    timestamps: bool = False
    prefix: bool = True

    @classmethod
    def for_names(cls, names: Iterable[str], **options: bool) -> Style:
        """The name column as wide as the longest of ``names``."""
        return cls(width=max((len(n) for n in names), default=0), **options)


def colour_of(name: str) -> int:
    """The same colour for a name in every run and on every machine (not Python's salted hash)."""
    return PALETTE[zlib.crc32(name.encode("utf-8")) % len(PALETTE)]


def format_line(line: LogLine, style: Style) -> str:
    """``api   | started pid 123`` (name padded to the widest shown, in its colour on a terminal)."""
    parts = []
    if style.prefix:
        label = f"{line.service.ljust(style.width)} |"
        parts.append(f"\x1b[{colour_of(line.service)}m{label}{_RESET}" if style.colour else label)
    if style.timestamps:
        parts.append(line.stamp or " " * STAMP_WIDTH)
    text = line.text
    if line.mark and style.colour:
        text = f"{_MARK_STYLE}{text}{_RESET}"
    parts.append(text)
    return " ".join(parts)


def use_colour(isatty: bool, environ: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set to anything (no-color.org)
    or the terminal says it cannot (``TERM=dumb``)."""
    return isatty and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


# ----------------------------------------------------------------------------- --since


def stamp_of(t: float) -> str:
    """Unix time ``t`` as the log files write it, to compare with their stamps."""
    ms = int(t * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ms:03d}Z"


def parse_since(text: str, now: float) -> float:
    """The unix time ``--since`` means: a duration back from ``now`` (``10m``, ``1h30m``, ``90s``;
    a bare number is seconds, as everywhere in the manifest), or a date and time
    (``2026-11-29T10:00``, ``2026-11-29``; local time unless it names a zone, as compose).

    :raises ValueError: neither, with a message for people
    """
    value = text.strip()
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not {SINCE_HINT}") from None
    return when.timestamp()  # a naive date and time is local time


# ----------------------------------------------------------------------------- selectors


class SelectionError(ValueError):
    """A selector that names nothing, or two things."""


def select_logged(selectors: Sequence[str], logged: Collection[str]) -> list[str]:
    """What ``selectors`` name among the services that have a log file: what `svc logs`
    can show while the manifest does not load (no tiers or groups then). No selector
    means every log, in name order.

    :raises SelectionError: a name with no log file (with a did-you-mean)
    """
    if not selectors:
        return sorted(logged)
    unknown = [s for s in selectors if s not in logged]
    if unknown:
        raise SelectionError(f"no service named {unknown[0]!r}{_did_you_mean(unknown[0], logged)}")
    return list(dict.fromkeys(selectors))


def _did_you_mean(name: str, candidates: list[str]) -> str:
    import difflib  # lazy: only a typo needs it

    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
