"""The HTTP side of one connection to the daemon's endpoint (see ``daemon/httpserver.py``).

The request is parsed by h11, a strict HTTP/1.1 parser that does no I/O of its own
(~0.3 MB resident; ``http.server`` with the ``email`` package it parses headers with
was ~2 MB the daemon kept after its first scrape). A module of its own, loaded with
the first request: a daemon nobody scrapes never pays even that.

One request per connection, answered with ``Connection: close``: Prometheus and the
status page open a connection per request anyway, and a thread is never held by a
client between requests. Header names are compared in lower case, as HTTP says they
must be (the loopback Host check once missed a ``host:`` header).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import h11
import structlog

from supervisord_lite.daemon.httpserver import Request, Response

if TYPE_CHECKING:
    from supervisord_lite.daemon.httpserver import _Server

log = structlog.get_logger("supervisord_lite.daemon.httpserver")

#: A client that sends nothing (or reads nothing) does not hold a thread for longer.
TIMEOUT = 30.0
#: The request line and headers together, at most (431 beyond it): room for the cookies
#: a browser sends to every localhost port.
MAX_REQUEST_HEAD = 64 * 1024
#: What is read, at most, of a request the server will not read whole before it closes.
DRAIN_LIMIT = 1 << 20
SERVER_NAME = b"supervisord-lite"
METHODS = ("GET", "HEAD")


def serve_connection(sock: socket.socket, client_address: Any, server: _Server) -> None:
    """Read one request from ``sock``, answer it, and return (the server closes ``sock``)."""
    sock.settimeout(TIMEOUT)
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    try:
        event = _next_event(conn, sock)
    except h11.RemoteProtocolError as exc:
        status = exc.error_status_hint
        _answer(conn, sock, Response.text(f"bad request: {exc}\n", status), head_only=False, server=server)
        _log(client_address, "-", "-", status)
        _drain(sock)
        return
    except OSError:  # a timeout, or the client left
        return
    if not isinstance(event, h11.Request):
        return  # closed before asking anything
    method = event.method.decode("ascii", "replace")
    target = event.target.decode("ascii", "replace")
    if method not in METHODS:
        response = Response(405, b"only GET and HEAD\n", headers={"Allow": ", ".join(METHODS)})
    else:
        url = urlsplit(target)
        request = Request(
            method=method,
            path=url.path,
            query=parse_qs(url.query),
            headers={name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers},
            stopping=server.app.stopping,
            client_gone=lambda: _client_gone(sock),
        )
        response = server.app.dispatch(request)
    _log(client_address, method, target, response.status)
    try:
        whole = isinstance(conn.next_event(), h11.EndOfMessage)  # no body to read: nothing left unread
    except h11.RemoteProtocolError:
        whole = False
    _answer(conn, sock, response, head_only=method == "HEAD", server=server)
    if not whole:
        _drain(sock)


def _next_event(conn: h11.Connection, sock: socket.socket) -> Any:
    """The request (or the end of the connection). At most MAX_REQUEST_HEAD + 1 bytes are
    read before it is whole: h11 bounds only a head still incomplete after a read, and a
    read could bring a whole oversized one."""
    received = 0
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        room = MAX_REQUEST_HEAD + 1 - received
        if room <= 0:
            raise h11.RemoteProtocolError("the request's head is too large", error_status_hint=431)
        data = sock.recv(min(room, 65536))
        received += len(data)
        conn.receive_data(data)  # b"" (the client closed) ends it with ConnectionClosed


def _answer(conn: h11.Connection, sock: socket.socket, response: Response, *, head_only: bool, server: _Server) -> None:
    """Write ``response``; a streaming body goes out chunk by chunk under the server's
    cap on open streams (a 503 beyond it)."""
    app = server.app
    streaming = not isinstance(response.body, bytes)
    if streaming and not app.stream_slots.acquire(blocking=False):
        close_body(response.body)  # type: ignore[arg-type]
        message = f"too many event streams open (the limit is {app.max_streams}); try again later\n"
        _answer(conn, sock, Response(503, message.encode(), headers={"Retry-After": "5"}), head_only=head_only, server=server)
        return
    if not streaming:
        _write(conn, sock, response, head_only, app.stopping)
        return
    with app.streams_lock:
        app.open_streams += 1
    try:
        _write(conn, sock, response, head_only, app.stopping)
    finally:
        with app.streams_lock:
            app.open_streams -= 1
        app.stream_slots.release()


def _write(conn: h11.Connection, sock: socket.socket, response: Response, head_only: bool, stopping: threading.Event) -> None:
    body = response.body
    headers = [
        ("Server", SERVER_NAME),
        ("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()).encode()),
        ("Content-Type", response.content_type.encode()),
        ("X-Content-Type-Options", b"nosniff"),
        ("Connection", b"close"),
        *((name, value.encode("latin-1")) for name, value in response.headers.items()),
    ]
    if isinstance(body, bytes):
        headers.append(("Content-Length", str(len(body)).encode()))
    else:
        headers.append(("Cache-Control", b"no-cache"))
    try:
        reason = HTTPStatus(response.status).phrase.encode()
    except ValueError:
        reason = b""
    try:
        sock.sendall(conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason)))
        if isinstance(body, bytes):
            if body and not head_only:
                sock.sendall(conn.send(h11.Data(data=body)))
        elif not head_only:
            _stream(conn, sock, body, stopping)
        sock.sendall(conn.send(h11.EndOfMessage()))
    except (OSError, h11.LocalProtocolError):
        pass  # the client left (or stopped reading for longer than TIMEOUT)
    finally:
        if not isinstance(body, bytes):
            close_body(body)


def _stream(conn: h11.Connection, sock: socket.socket, body: Iterable[bytes], stopping: threading.Event) -> None:
    """Each chunk as it comes, until the body ends or the server stops."""
    for chunk in body:
        if chunk:
            sock.sendall(conn.send(h11.Data(data=chunk)))
        if stopping.is_set():
            break


def _drain(sock: socket.socket) -> None:
    """Read what the client still sends (a body nobody wants, the rest of a refused head)
    before the server closes: closing over unread data resets the connection, and the
    answer can be lost with it. Bounded: 1 MiB, 1 s."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(1.0)
        left = DRAIN_LIMIT
        while left > 0 and (data := sock.recv(min(left, 65536))):
            left -= len(data)
    except OSError:
        pass


def _client_gone(sock: socket.socket) -> bool:
    """Has the client closed its end? A stream's slot is freed at once, not at its next write."""
    try:
        poller = select.poll()  # not select(): descriptors above 1023 are common in a busy daemon
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0)) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _log(client_address: Any, method: str, target: str, status: int) -> None:
    client = client_address[0] if isinstance(client_address, tuple) and client_address else str(client_address)
    log.debug("metrics.request", client=client, line=f'"{method} {target[:200]}" {status}')


def close_body(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()
