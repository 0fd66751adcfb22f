"""Durations ("500ms", "2s", "1m30s", or a number of seconds) and sizes ("512MB", "1GiB").

Pure functions, standard library only. Parsers raise ``ValueError`` with a message
meant for people; the manifest loader turns it into a problem naming the key.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from supervisord_lite.core.limits import MAX_DURATION, MAX_SIZE

if TYPE_CHECKING:
    from decimal import Decimal

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|h|m|s)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*(?:ms|h|m|s)\s*)+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

# Decimal units are powers of 1000, binary (…iB) powers of 1024, as on a disk label.
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")

DURATION_HINT = 'a duration such as "500ms", "2s", "1m", "1h" or a number of seconds'
SIZE_HINT = 'a size such as "512MB", "1GB", "1GiB" or a number of bytes'
DURATION_RANGE = f"durations go from 0 to {MAX_DURATION / 3600:g}h ({MAX_DURATION / 86400:g} days)"
SIZE_RANGE = "sizes go from 1 byte to 1TiB"


def parse_duration(value: object) -> float:
    """Seconds from ``"500ms"``, ``"2s"``, ``"1m30s"``, ``"1h"``, ``"0"`` or an int/float.

    :raises ValueError: not a duration, negative, not finite, or beyond ``MAX_DURATION``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected {DURATION_HINT}")
    if isinstance(value, int):
        seconds = float(value) if abs(value) <= MAX_DURATION else math.inf if value > 0 else -math.inf
    elif isinstance(value, float):
        seconds = value
    else:
        text = value.strip().lower()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif _DURATION.fullmatch(text):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"{value!r} is not {DURATION_HINT}")
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{_shown(value)} is not {DURATION_HINT} (it must be 0 or more)")
    if seconds > MAX_DURATION:
        raise ValueError(f"{_shown(value)} is too long: {DURATION_RANGE}")
    return seconds


def format_duration(seconds: float) -> str | float:
    """The shortest human form of ``seconds`` that parses back to exactly the same float."""
    candidates: list[str] = []
    if seconds == int(seconds):
        whole = int(seconds)
        candidates += [
            f"{whole // size}{unit}" for unit, size in (("h", 3600), ("m", 60)) if whole and whole % size == 0
        ]
        candidates.append(f"{whole}s")
    elif seconds * 1000 == int(seconds * 1000):
        candidates.append(f"{int(seconds * 1000)}ms")
    return next((c for c in candidates if parse_duration(c) == seconds), seconds)


def parse_size(value: object) -> int:
    """Bytes from ``"512MB"``, ``"1GiB"``, ``"100KB"`` or an int of bytes.

    :raises ValueError: not a size, not positive, or beyond ``MAX_SIZE``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected {SIZE_HINT}")
    if isinstance(value, int):
        exact: int | Decimal = value
    else:
        from decimal import Decimal  # lazy: only a size written as text needs it (~0.3 MB kept)

        match = _SIZE.fullmatch(value.strip().lower())
        if not match or match.group(2) not in _SIZE_UNITS | {"": 1}:
            raise ValueError(f"{_shown(value)} is not {SIZE_HINT}")
        exact = Decimal(match.group(1)) * _SIZE_UNITS.get(match.group(2), 1)  # exact, however many digits
    if exact > MAX_SIZE:
        raise ValueError(f"{_shown(value)} is too large: {SIZE_RANGE}")
    size = int(exact)
    if size <= 0:
        raise ValueError(f"{_shown(value)} is not {SIZE_HINT} (it must be more than 0)")
    return size


def _shown(value: object) -> str:
    """The value as the user wrote it, cut short when it is long."""
    if isinstance(value, int) and value.bit_length() > 128:
        return "an integer of more than 38 digits"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
