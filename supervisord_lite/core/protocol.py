"""The control socket: a Unix stream socket in ``state_dir`` speaking JSON lines.

Protocol (documented in the README): the client sends one line, a JSON object
``{"op": "status", "args": {...}}``; the daemon answers with one or more JSON lines.
Every line but the last is a progress message (``{"progress": ...}``); the last has
``"done": true`` and either ``"ok": true, "result": ...`` or ``"ok": false,
"error": "...", "code": N`` (N is the exit code the CLI should use). Requests longer
than ``MAX_REQUEST`` bytes, invalid JSON or unknown ops get an error answer and the
connection is closed; nothing a client sends can stop the daemon.

Only peers of the daemon's own uid (or root) are served, checked with SO_PEERCRED;
the socket file is created mode 0600.

The client half uses the plain ``socket`` module so the CLI does not import anyio.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

MAX_REQUEST = 1024 * 1024
_SUN_PATH_MAX = 104  # the portable limit of sockaddr_un.sun_path (108 on Linux), minus margin


class ControlError(Exception):
    """A request the daemon refused or could not do; ``code`` is the CLI exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class DaemonUnreachable(Exception):
    """No daemon answers on the socket."""


def socket_path_for(state_dir: Path) -> Path:
    """Where the daemon of this state_dir listens.

    Normally ``state_dir/svc.sock``; when that path is too long for a Unix socket
    address, a short path in /tmp derived from the state_dir, so both sides agree.
    """
    path = state_dir.resolve() / "svc.sock"
    if len(os.fsencode(path)) < _SUN_PATH_MAX:
        return path
    digest = hashlib.sha1(os.fsencode(state_dir.resolve())).hexdigest()[:16]
    return Path(f"/tmp/svc-{os.getuid()}-{digest}.sock")


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def peer_allowed(uid: int) -> bool:
    return uid == os.getuid() or uid == 0


# --------------------------------------------------------------------------- server


class Handler(Protocol):
    """What the control server needs from the daemon: one streaming call per op."""

    def handle(self, op: str, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """Decode one request line; ControlError(code=2) for anything malformed."""
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"invalid request: not JSON ({exc})", 2) from None
    except RecursionError:
        raise ControlError("invalid request: JSON nested too deeply", 2) from None
    if not isinstance(message, dict):
        raise ControlError("invalid request: expected a JSON object", 2)
    op = message.get("op")
    args = message.get("args", {})
    if not isinstance(op, str) or not op:
        raise ControlError("invalid request: 'op' must be a non-empty string", 2)
    if not isinstance(args, dict):
        raise ControlError("invalid request: 'args' must be an object", 2)
    return op, args


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


async def serve(path: Path, handler: Handler, *, task_status: Any = None, on_error: Callable[[str], None] | None = None) -> None:
    """Listen on ``path`` until cancelled, one task per connection."""
    import anyio
    from anyio.streams.buffered import BufferedByteReceiveStream

    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    old_umask = os.umask(0o177)  # the socket file is born 0600
    try:
        listener = await anyio.create_unix_listener(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)

    idle: dict[anyio.CancelScope, None] = {}  # connections still waiting for their request line, oldest first
    idle_limit = _idle_limit()

    async def serve_one(stream: Any) -> None:
        async with stream:
            try:
                raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
                if not peer_allowed(peer_uid(raw)):
                    with anyio.move_on_after(1):  # take its request first, or its send may fail with EPIPE
                        await BufferedByteReceiveStream(stream).receive_until(b"\n", MAX_REQUEST)
                    await stream.send(encode({"done": True, "ok": False, "code": 3, "error": "permission denied: this daemon serves only its own user"}))
                    return
                buffered = BufferedByteReceiveStream(stream)
                line = None
                with anyio.CancelScope() as waiting:  # cancelled when evicted as the oldest idle one
                    idle[waiting] = None
                    try:
                        while len(idle) > idle_limit:
                            oldest = next(iter(idle))
                            del idle[oldest]
                            oldest.cancel()
                        with anyio.fail_after(30):
                            line = await buffered.receive_until(b"\n", MAX_REQUEST)
                    finally:
                        idle.pop(waiting, None)
                if line is None:
                    return  # evicted: too many connections were waiting without a request
                op, args = parse_request(line)
                async for message in handler.handle(op, args):
                    await stream.send(encode(message))
            except ControlError as exc:
                await _try_send(stream, {"done": True, "ok": False, "code": exc.code, "error": str(exc)})
            except anyio.DelimiterNotFound:
                await _try_send(stream, {"done": True, "ok": False, "code": 2, "error": f"invalid request: longer than {MAX_REQUEST} bytes"})
            except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, TimeoutError):
                pass  # the client went away or sent half a request: nothing to answer
            except Exception as exc:  # never let one bad request take the daemon down
                if on_error:
                    on_error(f"control request failed: {exc!r}")
                await _try_send(stream, {"done": True, "ok": False, "code": 1, "error": f"internal error: {exc}"})

    async with listener:
        if task_status is not None:
            task_status.started()
        try:
            await _accept_forever(listener, serve_one, on_error)
        finally:
            try:
                path.unlink()
            except OSError:
                pass


_ACCEPT_RETRY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED})


def _idle_limit() -> int:
    """How many connections may wait for their request line at once: a quarter of the
    file-descriptor limit (at most 256), so idle clients cannot starve the services'
    pipes and probes of descriptors. Beyond it the oldest idle connection is closed."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(8, min(256, soft // 4))


async def _accept_forever(listener: Any, serve_one: Callable[[Any], Any], on_error: Callable[[str], None] | None) -> None:
    """``listener.serve``, except that running out of file descriptors (or memory) pauses
    accepting instead of ending the server (and with it the daemon): the pending
    connections wait in the backlog until descriptors are free again."""
    import anyio

    async with anyio.create_task_group() as tg:
        reported = False
        while True:
            try:
                stream = await listener.accept()
            except anyio.BrokenResourceError as exc:
                cause = exc.__cause__
                if not isinstance(cause, OSError) or cause.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                if not reported and on_error is not None:
                    on_error(f"control socket: cannot accept connections for now: {cause.strerror}; retrying")
                reported = True
                await anyio.sleep(0.1)
                continue
            reported = False
            tg.start_soon(serve_one, stream)


async def _try_send(stream: Any, message: dict[str, Any]) -> None:
    try:
        await stream.send(encode(message))
    except Exception:
        pass


def _remove_stale(path: Path) -> None:
    """Remove a socket file no daemon answers on (left by a crashed daemon)."""
    if not path.exists():
        return
    if ping(path):
        raise ControlError(f"a daemon already listens on {path}", 1)
    path.unlink()


# --------------------------------------------------------------------------- client


def ping(path: Path, timeout: float = 1.0) -> bool:
    try:
        for message in request(path, "ping", {}, timeout=timeout):
            if message.get("done"):
                return bool(message.get("ok"))
    except (DaemonUnreachable, ControlError):
        return False
    return False


def request(path: Path, op: str, args: dict[str, Any], *, timeout: float | None = 30.0) -> Iterator[dict[str, Any]]:
    """Send one request and yield every answer line (the last has ``done``)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError, socket.timeout) as exc:
        sock.close()
        raise DaemonUnreachable(str(exc)) from None
    except OSError as exc:  # permission denied, a full backlog (EAGAIN), ...
        sock.close()
        raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}", 3) from None
    with sock:
        try:
            sock.sendall(encode({"op": op, "args": args}))
        except (BrokenPipeError, ConnectionResetError):
            raise ControlError(f"the daemon closed the connection during {op!r}", 1) from None
        buffer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise ControlError(f"the daemon did not answer {op!r} within {timeout:g}s", 1) from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ControlError(f"the daemon closed the connection during {op!r}", 1)
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = json.loads(line)
                yield message
                if message.get("done"):
                    return


def call(path: Path, op: str, args: dict[str, Any] | None = None, *, timeout: float | None = 30.0) -> Any:
    """One request, its final result; ControlError when the daemon says no."""
    for message in request(path, op, args or {}, timeout=timeout):
        if message.get("done"):
            if message.get("ok"):
                return message.get("result")
            raise ControlError(message.get("error", "unknown error"), int(message.get("code", 1)))
    raise ControlError(f"no answer to {op!r}", 1)
