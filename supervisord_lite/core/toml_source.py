"""The manifest file as TOML data: reading its bytes, decoding, bounding, parsing.

Every failure becomes a ``Problem``: a missing, unreadable or too large file, text
that is not UTF-8, text beyond the manifest's bounds (``toml_bounds``), and TOML
syntax errors with the line and column tomllib reports.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from supervisord_lite.core.limits import MAX_FILE_BYTES
from supervisord_lite.core.problems import ManifestError, Problem
from supervisord_lite.core.toml_bounds import check_toml_bounds

_TOO_LARGE = f"is larger than {MAX_FILE_BYTES // 1024:,} KiB, the limit for a manifest"


def read_manifest_text(path: Path) -> str:
    """The manifest file's text. :raises ManifestError: missing, unreadable, too large or not UTF-8."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)  # never more, whatever the file is
        if len(data) > MAX_FILE_BYTES:
            message = _TOO_LARGE
        else:
            return data.decode("utf-8")
    except FileNotFoundError:
        message = "no such manifest file (give one with -f PATH, $SVC_MANIFEST, or create ./svc.toml)"
    except IsADirectoryError:
        message = "is a directory, not a manifest file"
    except UnicodeDecodeError as exc:
        message = f"is not UTF-8 text ({exc.reason} at byte {exc.start})"
    except OSError as exc:
        message = f"cannot be read: {exc.strerror or exc}"
    raise ManifestError([Problem("error", str(path), None, None, message)])


def read_optional_text(path: Path) -> str | None:
    """The text of a file that may be absent (an override, a ``.env``): None when there is none.
    :raises ManifestError: it exists but cannot be read, is too large or not UTF-8."""
    try:
        if not path.exists():
            return None
    except OSError:  # e.g. a folder this user may not enter: read_manifest_text says so
        pass
    return read_manifest_text(path)


def parse_toml(text: str, file: str) -> dict[str, Any] | Problem:
    """The document's data, or what is wrong with the text as a Problem naming ``file``."""
    if len(text) > MAX_FILE_BYTES:
        return Problem("error", file, None, None, _TOO_LARGE)
    try:
        if len(text.encode("utf-8")) > MAX_FILE_BYTES:
            return Problem("error", file, None, None, _TOO_LARGE)
    except UnicodeEncodeError as exc:  # a lone surrogate: no file holds this text
        return Problem("error", file, None, None, f"is not UTF-8 text ({exc.reason} at character {exc.start})")
    if (overflow := check_toml_bounds(text)) is not None:
        line, col = overflow.position(text)
        return Problem("error", file, None, None, overflow.message, line, col)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return _syntax_problem(file, text, exc)
    except ValueError:  # an integer of more than 4300 digits (Python's limit for converting one)
        line = col = None
        if match := re.search(r"[0-9][0-9_]{4299}", text):
            line = text.count("\n", 0, match.start()) + 1
            col = match.start() - text.rfind("\n", 0, match.start())
        return Problem("error", file, None, None, "invalid TOML: an integer beyond 64 bits", line, col)
    except RecursionError:  # not expected within the bounds above; refused all the same
        return Problem("error", file, None, None, "invalid TOML: nested too deeply")


def toml_data(path: Path) -> dict[str, Any]:
    """The file's TOML data, read and parsed within the manifest's bounds, not validated
    (for what must work on a manifest that no longer validates, such as finding its
    daemon). :raises ValueError: the file cannot be read or parsed."""
    try:
        text = read_manifest_text(path)
    except ManifestError as exc:
        raise ValueError(str(exc)) from None
    data = parse_toml(text, str(path))
    if isinstance(data, Problem):
        raise ValueError(str(data))
    return data


def _syntax_problem(file: str, text: str, exc: tomllib.TOMLDecodeError) -> Problem:
    message = str(exc)
    line = col = None
    if match := re.search(r"\s*\(at line (\d+), column (\d+)\)$", message):
        line, col = int(match.group(1)), int(match.group(2))
        message = message[: match.start()]
    elif match := re.search(r"\s*\(at end of document\)$", message):
        line = text.count("\n") + 1
        message = message[: match.start()] + " at the end of the file"
    return Problem("error", file, None, None, f"invalid TOML: {message}", line, col)
