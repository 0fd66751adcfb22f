"""The daemon's control socket: serves the control protocol on a Unix stream socket.

Only peers of the daemon's own uid (or root) are served, checked with SO_PEERCRED;
the socket file is created mode 0600. Nothing a client sends can stop the daemon:
a malformed request gets a refusal and an unexpected failure an "internal error".
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from supervisord_lite.core.exitcodes import ExitCode
from supervisord_lite.core.protocol import MAX_REQUEST, ControlError, encode, parse_request, refusal


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def peer_allowed(uid: int) -> bool:
    return uid == os.getuid() or uid == 0


class Handler(Protocol):
    """What the control server needs from the daemon: one streaming call per op."""

    def handle(self, op: str, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...


async def serve(path: Path, handler: Handler, *, task_status: Any = None, on_error: Callable[[str], None] | None = None) -> None:
    """Listen on ``path`` until cancelled, one task per connection."""
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
                    await stream.send(encode(refusal("permission denied: this daemon serves only its own user", ExitCode.NO_DAEMON)))
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
                await _try_send(stream, refusal(str(exc), exc.code))
            except anyio.DelimiterNotFound:
                await _try_send(stream, refusal(f"invalid request: longer than {MAX_REQUEST} bytes", ExitCode.USAGE))
            except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, TimeoutError):
                pass  # the client went away or sent half a request: nothing to answer
            except Exception as exc:  # never let one bad request take the daemon down
                if on_error:
                    on_error(f"control request failed: {exc!r}")
                await _try_send(stream, refusal(f"internal error: {exc}", ExitCode.FAILED))

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
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(8, min(256, soft // 4))


async def _accept_forever(listener: Any, serve_one: Callable[[Any], Any], on_error: Callable[[str], None] | None) -> None:
    """``listener.serve``, except that running out of file descriptors (or memory) pauses
    accepting instead of ending the server (and with it the daemon): the pending
    connections wait in the backlog until descriptors are free again."""
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
    if _answers(path):
        raise ControlError(f"a daemon already listens on {path}", ExitCode.FAILED)
    path.unlink()


def _answers(path: Path) -> bool:
    """Does a server accept connections on ``path``? (A live daemon always does.)"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()
