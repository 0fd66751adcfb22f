"""The manifest file as TOML data: reading its bytes, decoding, parsing.

Every failure becomes a ``Problem``: a missing or unreadable file, text that is not
UTF-8, and TOML syntax errors with the line and column tomllib reports.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from supervisord_lite.core.problems import ManifestError, Problem


def read_manifest_text(path: Path) -> str:
    """The manifest file's text. :raises ManifestError: missing, unreadable or not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        message = "no such manifest file (give one with -f PATH, $SVC_MANIFEST, or create ./svc.toml)"
    except IsADirectoryError:
        message = "is a directory, not a manifest file"
    except UnicodeDecodeError as exc:
        message = f"is not UTF-8 text ({exc.reason} at byte {exc.start})"
    except OSError as exc:
        message = f"cannot be read: {exc.strerror or exc}"
    raise ManifestError([Problem("error", str(path), None, None, message)])


def parse_toml(text: str, file: str) -> dict[str, Any] | Problem:
    """The document's data, or the syntax error as a Problem naming ``file``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return _syntax_problem(file, text, exc)


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
