"""The control socket's client half: one request, its answer lines.

Plain blocking sockets, so the command line never imports anyio. This is the wire
only; ``cli.client`` has one function per request the CLI makes.

Nothing is sent to, or believed from, a listener before it is proved to be ours:
the socket's private folder and path are checked before connecting, and right after
connecting the listener's uid (SO_PEERCRED) must be ours or root's. Anything else
is an ``UntrustedSocket`` with a message saying who serves the path.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from supervisord_lite.core.exitcodes import ExitCode
from supervisord_lite.core.protocol import ControlError, DaemonUnreachable, encode
from supervisord_lite.host import socketdir


class UntrustedSocket(ControlError):
    """The control socket is not safe to talk to: its folder or path is not what the
    daemon makes (exit 2), or another user's process listens on it (exit 3)."""


def trusted_listener(uid: int) -> bool:
    """A daemon we may believe runs as us, or as root."""
    return uid == os.getuid() or uid == 0


def _connect(path: Path, timeout: float | None) -> socket.socket:
    """A connection to the daemon on ``path``, its listener checked before anything is sent."""
    try:
        socketdir.check_before_connect(path)
    except socketdir.SocketPathError as exc:
        raise UntrustedSocket(str(exc), ExitCode.USAGE) from None
    except socketdir.SocketAccessDenied as exc:  # another user's daemon: it would not serve us anyway
        raise ControlError(str(exc), ExitCode.NO_DAEMON) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError, socket.timeout) as exc:
        sock.close()
        raise DaemonUnreachable(str(exc)) from None
    except OSError as exc:  # permission denied, a full backlog (EAGAIN), ...
        sock.close()
        raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}", ExitCode.NO_DAEMON) from None
    uid = socketdir.peer_uid(sock)
    if not trusted_listener(uid):
        sock.close()
        raise UntrustedSocket(
            f"the control socket {path} is served by {socketdir.describe_uid(uid)}, not by you or root: refusing to trust it",
            ExitCode.NO_DAEMON,
        )
    return sock


def request(path: Path, op: str, args: dict[str, Any], *, timeout: float | None = 30.0) -> Iterator[dict[str, Any]]:
    """Send one request and yield every answer line (the last has ``done``)."""
    sock = _connect(path, timeout)
    with sock:
        try:
            sock.sendall(encode({"op": op, "args": args}))
        except (BrokenPipeError, ConnectionResetError):
            pass  # it may have refused us before reading (too many connections): its answer is still there to read
        buffer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise ControlError(f"the daemon did not answer {op!r} within {timeout:g}s", ExitCode.FAILED) from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ControlError(f"the daemon closed the connection during {op!r}", ExitCode.FAILED)
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = json.loads(line)
                yield message
                if message.get("done"):
                    return


def call(
    path: Path,
    op: str,
    args: dict[str, Any] | None = None,
    *,
    timeout: float | None = 30.0,
    on_progress: Callable[[Any], None] | None = None,
) -> Any:
    """One request, its final result; ControlError when the daemon says no.

    ``on_progress`` gets the payload of each progress line before the result
    (``up`` and ``restart`` report every state change while they wait)."""
    for message in request(path, op, args or {}, timeout=timeout):
        if message.get("done"):
            return final_result(message)
        if on_progress is not None and "progress" in message:
            on_progress(message["progress"])
    raise ControlError(f"no answer to {op!r}", ExitCode.FAILED)


def final_result(message: dict[str, Any]) -> Any:
    """The result a request's last line carries; ControlError when the daemon refused."""
    if message.get("ok"):
        return message.get("result")
    raise ControlError(message.get("error", "unknown error"), int(message.get("code", ExitCode.FAILED)))
