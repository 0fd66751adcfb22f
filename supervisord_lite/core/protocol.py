"""The control protocol's messages: JSON lines over a Unix stream socket.

The client sends one line, a JSON object ``{"op": "status", "args": {...}}``; the
daemon answers with one or more JSON lines. Every line but the last is a progress
message (``{"progress": ...}``); the last has ``"done": true`` and either
``"ok": true, "result": ...`` or ``"ok": false, "error": "...", "code": N`` (N is the
exit code the CLI should use). Requests longer than ``MAX_REQUEST`` bytes, invalid
JSON or unknown ops get an error answer. The README documents the ops.
"""

from __future__ import annotations

import json
from typing import Any

from supervisord_lite.core.exitcodes import ExitCode

MAX_REQUEST = 1024 * 1024


class ControlError(Exception):
    """A request the daemon refused or could not do; ``code`` is the CLI exit code."""

    def __init__(self, message: str, code: int = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.code = code


class DaemonUnreachable(Exception):
    """No daemon answers on the socket."""


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """Decode one request line; ControlError(code=2) for anything malformed."""
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"invalid request: not JSON ({exc})", ExitCode.USAGE) from None
    except RecursionError:
        raise ControlError("invalid request: JSON nested too deeply", ExitCode.USAGE) from None
    if not isinstance(message, dict):
        raise ControlError("invalid request: expected a JSON object", ExitCode.USAGE)
    op = message.get("op")
    args = message.get("args", {})
    if not isinstance(op, str) or not op:
        raise ControlError("invalid request: 'op' must be a non-empty string", ExitCode.USAGE)
    if not isinstance(args, dict):
        raise ControlError("invalid request: 'args' must be an object", ExitCode.USAGE)
    return op, args


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def refusal(message: str, code: int) -> dict[str, Any]:
    """The last line of an answer that says no."""
    return {"done": True, "ok": False, "code": int(code), "error": message}
