"""The daemon's control socket: serves the control protocol on a Unix stream socket.

Only peers of the daemon's own uid (or root) are served, checked with SO_PEERCRED;
the socket file is created mode 0600, in state_dir or in a private folder checked
by ``host.socketdir``. Nothing a client sends can stop the daemon: a malformed
request gets a refusal and an unexpected failure an "internal error"; how many
connections each uid may hold is ``control_admission``'s business.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from supervisord_lite.core import paths
from supervisord_lite.core.exitcodes import ExitCode
from supervisord_lite.core.protocol import MAX_REQUEST, ControlError, encode, parse_request, refusal
from supervisord_lite.daemon.control_admission import Admission, Connection
from supervisord_lite.host import socketdir
from supervisord_lite.host.socketdir import SocketPathError, describe_uid, peer_uid

__all__ = ["Handler", "SocketPathError", "claim_path", "peer_allowed", "peer_uid", "serve"]


def peer_allowed(uid: int) -> bool:
    return uid == os.getuid() or uid == 0


class Handler(Protocol):
    """What the control server needs from the daemon: one streaming call per op."""

    def handle(self, op: str, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...


def claim_path(state_dir: Path) -> Path:
    """The socket path the daemon of ``state_dir`` listens on, made ready: its private
    folder (when state_dir's path is too long) created and proved ours, and a stale
    socket a crashed daemon left removed. SocketPathError when another daemon listens
    there, or when the folder or the path is not safe to use."""
    path = socketdir.prepare_listen_path(paths.socket_candidates(state_dir))
    _remove_stale(path)
    return path


async def serve(path: Path, handler: Handler, *, task_status: Any = None, on_error: Callable[[str], None] | None = None) -> None:
    """Listen on ``path`` until cancelled, one task per connection (see ``control_admission``)."""
    if paths.is_private_socket_dir(path.parent):
        socketdir.ensure_private_dir(path.parent)
    else:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_stale(path)
    old_umask = os.umask(0o177)  # the socket file is born 0600
    try:
        listener = await anyio.create_unix_listener(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    admission = Admission(own_uid=os.getuid())

    async def serve_one(stream: Any) -> None:
        conn = None
        try:
            async with stream:
                uid = peer_uid(stream.extra(anyio.abc.SocketAttribute.raw_socket))
                conn, within_caps = admission.admit(uid)
                with conn.scope:  # cancelled when it is closed to make room, while idle
                    if not peer_allowed(uid):
                        await _refuse(stream, "permission denied: this daemon serves only its own user", ExitCode.NO_DAEMON)
                    elif not within_caps:
                        message = (f"too many control connections from {describe_uid(uid)} "
                                   f"(at most {admission.cap_for(uid)} at once, none idle): try again when some have finished")
                        await _refuse(stream, message, ExitCode.FAILED)
                    else:
                        await _answer(stream, conn)
        except Exception as exc:  # a peer gone before it could be asked who it is, a close that failed, ...
            if on_error:
                on_error(f"control connection failed: {exc!r}")
        finally:
            if conn is not None:
                admission.release(conn)

    async def _answer(stream: Any, conn: Connection) -> None:
        try:
            with anyio.fail_after(30):  # an idle client is closed after 30 s, or sooner when room is needed
                line = await BufferedByteReceiveStream(stream).receive_until(b"\n", MAX_REQUEST)
            admission.mark_busy(conn)
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
            await _accept_forever(listener, serve_one, admission, on_error)
        finally:
            try:
                path.unlink()
            except OSError:
                pass


async def _refuse(stream: Any, message: str, code: int) -> None:
    """Answer no. Its request is taken first (for at most 1 s): closing a Unix socket
    with unread data resets it, and the client would never read the answer."""
    with anyio.move_on_after(1):
        try:
            await BufferedByteReceiveStream(stream).receive_until(b"\n", MAX_REQUEST)
        except Exception:
            pass
    await _try_send(stream, refusal(message, code))


_ACCEPT_RETRY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED})
_DESCRIPTOR_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})


async def _accept_forever(
    listener: Any, serve_one: Callable[[Any], Any], admission: Admission, on_error: Callable[[str], None] | None
) -> None:
    """``listener.serve``, except that running out of file descriptors (or memory) does
    not end the server (and with it the daemon): the oldest idle connection of the uid
    holding the most is closed to free a descriptor, and when none is idle, accepting
    pauses while the pending connections wait in the backlog. Accepting never waits for
    a connection's request: each one is read in its own task."""
    async with anyio.create_task_group() as tg:
        reported = False
        while True:
            try:
                stream = await listener.accept()
            except anyio.BrokenResourceError as exc:
                cause = exc.__cause__
                if not isinstance(cause, OSError) or cause.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                victim = admission.evict_one() if cause.errno in _DESCRIPTOR_ERRNOS else None
                if victim is not None:
                    with anyio.move_on_after(1):
                        await victim.closed.wait()  # its descriptor is free once its task has closed it
                    continue
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
    """Remove a socket file no daemon answers on (left by a crashed daemon); anything
    else at the path (a symlink, a folder, a file) is refused, never followed or removed."""
    if not socketdir.socket_present(path):
        return
    listener = _listener_uid(path)
    if listener is not None:
        raise SocketPathError(f"a process of {describe_uid(listener)} already listens on {path}")
    path.unlink()


def _listener_uid(path: Path) -> int | None:
    """The uid of the server accepting connections on ``path`` (a live daemon always
    does), or None when nothing does."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
        return peer_uid(probe)
    except OSError:
        return None
    finally:
        probe.close()
