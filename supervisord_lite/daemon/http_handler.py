"""The HTTP side of one request to the daemon's endpoint (see ``daemon/httpserver.py``).

A module of its own so that ``http.server``, and the ``email`` package it parses
headers with (~2 MB of the daemon's resident memory), load with the first request
rather than at the daemon's start.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import structlog

from supervisord_lite.daemon.httpserver import Request, Response

if TYPE_CHECKING:
    from supervisord_lite.daemon.httpserver import _Server

log = structlog.get_logger("supervisord_lite.daemon.httpserver")


class RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 30  # a client that sends nothing does not hold a thread for ever
    server_version = "supervisord-lite"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._serve(head_only=False)

    def do_HEAD(self) -> None:
        self._serve(head_only=True)

    def _refuse_method(self) -> None:
        self._write(Response(405, b"only GET and HEAD\n", headers={"Allow": "GET, HEAD"}), head_only=False)

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_method

    def _serve(self, head_only: bool) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query),
            headers=dict(self.headers.items()),
            stopping=app.stopping,
            client_gone=self._client_gone,
        )
        response = app.dispatch(request)
        if isinstance(response.body, bytes):
            self._write(response, head_only)
            return
        if not app.stream_slots.acquire(blocking=False):
            close_body(response.body)
            message = f"too many event streams open (the limit is {app.max_streams}); try again later\n"
            self._write(Response(503, message.encode(), headers={"Retry-After": "5"}), head_only)
            return
        with app.streams_lock:
            app.open_streams += 1
        try:
            self._write(response, head_only)
        finally:
            with app.streams_lock:
                app.open_streams -= 1
            app.stream_slots.release()

    def _client_gone(self) -> bool:
        """Has the client closed its end? A stream's slot is freed at once, not at its next write."""
        try:
            poller = select.poll()  # not select(): descriptors above 1023 are common in a busy daemon
            poller.register(self.connection, select.POLLIN)
            return bool(poller.poll(0)) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _write(self, response: Response, head_only: bool) -> None:
        body = response.body
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in response.headers.items():
            self.send_header(name, value)
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head_only:
                self.wfile.write(body)
            return
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        stopping = self.server.app.stopping
        try:
            for chunk in () if head_only else body:
                self.wfile.write(chunk)
                self.wfile.flush()
                if stopping.is_set():
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left
        finally:
            close_body(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics.request", client=self.client_address[0], line=format % args)


def close_body(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()
