"""The daemon's HTTP endpoint at ``supervisor.metrics``: /metrics, /healthz, and
whatever else the daemon routes there (the status page and /api/status).
A route ending in "/" also serves the paths below it (``/api/logs/NAME``).

A stdlib threading socket server in a daemon thread is enough: every handler reads
one immutable snapshot, so there is nothing to lock, and a slow client only holds
its own thread. The HTTP parsing (h11, in ``daemon/http_handler.py``) loads with the
first request: a daemon nobody scrapes never pays for it. Routes are a table of
``path -> handler(Request) -> Response``; a response body may be an iterable of
chunks, written as they come (server-sent events), until the client leaves or the
server stops.

Bound to loopback (the default) it answers only requests whose Host is a loopback
name or address, so a web page cannot read it through DNS rebinding.

Any local user can connect, so clients are bounded: at most ``max_connections``
requests are served at once (one thread each) and at most ``max_streams`` of them
are event streams; beyond either cap a client gets a 503 saying which, at once,
and the daemon's own work (control socket, supervision) never waits for them.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import structlog

from supervisord_lite.daemon.metrics import Metrics, SnapshotSource
from supervisord_lite.host.portinfo import listener_on

log = structlog.get_logger(__name__)

KEY = "supervisor.metrics"
#: Requests served at once (a thread each); more are answered 503 by the accepting thread.
MAX_CONNECTIONS = 64
#: Server-sent-event streams open at once (the status page holds one per open tab).
MAX_STREAMS = 32


class MetricsAddressError(Exception):
    """The metrics address is malformed, taken or not ours to bind; the message says which."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str  # GET or HEAD
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # names in lower case
    stopping: threading.Event  # set when the server stops: streaming bodies end then
    client_gone: Callable[[], bool] = lambda: False  # a streaming body ends once this says True


@dataclass(frozen=True, slots=True)
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status=status, body=text.encode())

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        return cls(status=status, body=json.dumps(data, indent=2).encode() + b"\n", content_type="application/json")


Handler = Callable[[Request], Response]
#: Returns None when the daemon is healthy, else what is wrong (for /healthz).
HealthCheck = Callable[[], str | None]


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str, *, key: str = KEY) -> tuple[str, int]:
    """``"127.0.0.1:9108"``, ``"[::1]:9108"``, ``":9108"`` (loopback) -> (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit():
        raise MetricsAddressError(f'{key}: "{text}" is not HOST:PORT (for example "127.0.0.1:9108"; "" turns it off)')
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise MetricsAddressError(f'{key}: port {port} in "{text}" is outside 0-65535')
    return host.strip("[]") or "127.0.0.1", port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host part of a Host header: ``[::1]:80`` -> ``::1``, ``a:80`` -> ``a``."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class _Server(socketserver.ThreadingTCPServer):
    """``http.server.ThreadingHTTPServer`` without importing it: the same socket options,
    and the server's name set without ``getfqdn()`` (a reverse DNS lookup that can hang)."""

    allow_reuse_address = True
    daemon_threads = True
    app: MetricsServer

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, app: MetricsServer) -> None:
        self.address_family = family
        self.app = app
        super().__init__(address, _handle_request)

    def server_bind(self) -> None:
        super().server_bind()
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        # Called inside socketserver's except block: a client that hung up, mostly.
        log.debug("metrics.client_error", client=str(client_address), exc_info=True)  # noqa: LOG014

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per request, up to the cap; beyond it a 503 from this thread (no thread)."""
        if not self.app.connection_slots.acquire(blocking=False):
            _refuse_busy(request, f"too many requests at once (the limit is {self.app.max_connections}); try again shortly")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.app.connection_slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.app.connection_slots.release()


def _handle_request(request: Any, client_address: Any, server: _Server) -> None:
    """Serve one connection with the HTTP handler, imported at the first request."""
    from supervisord_lite.daemon.http_handler import serve_connection

    serve_connection(request, client_address, server)


def _refuse_busy(sock: socket.socket, message: str) -> None:
    """A whole 503 in one non-blocking send: it fits any fresh socket's buffer, and a
    client that cannot take it is not waited for."""
    body = f"{message}\n".encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Retry-After: 5\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    try:
        sock.setblocking(False)
        sock.send(head.encode() + body)
        sock.recv(65536)  # the request, if it came: closing over unread data would reset the answer away
    except OSError:
        pass


class MetricsServer:
    """Serves /metrics and /healthz (plus ``extra_routes``) at ``address``.

    ``start()`` binds and returns once the server accepts connections; it raises
    ``MetricsAddressError`` naming ``supervisor.metrics`` when the address is
    taken or cannot be bound. ``port`` is the bound port (pass port 0 in tests).
    The supervisor feeds probe latencies through ``metrics.observe_probe``.
    ``max_connections`` and ``max_streams`` bound the clients served at once.
    """

    def __init__(
        self,
        address: tuple[str, int],
        get_snapshot: SnapshotSource,
        *,
        metrics: Metrics | None = None,
        extra_routes: Mapping[str, Handler] | None = None,
        health: HealthCheck | None = None,
        manifest: str = "",
        max_connections: int = MAX_CONNECTIONS,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.address = address
        self.get_snapshot = get_snapshot
        self.metrics = metrics if metrics is not None else Metrics(get_snapshot)
        self.health = health
        self.manifest = manifest  # named in error messages
        self.stopping = threading.Event()
        self.max_connections = max_connections
        self.max_streams = max_streams
        self.connection_slots = threading.BoundedSemaphore(max_connections)
        self.stream_slots = threading.BoundedSemaphore(max_streams)
        self.streams_lock = threading.Lock()
        self.open_streams = 0  # event streams being served now (/healthz says it)
        self.routes: dict[str, Handler] = {
            "/": self._index,
            "/metrics": self._metrics,
            "/healthz": self._healthz,
        }
        self.routes.update(extra_routes or {})
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("MetricsServer already started")
        host, port = self.address
        self._server = self._bind(host, port)
        self.stopping.clear()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="svc-metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics.listening", url=self.url)

    def stop(self) -> None:
        """Stop serving and free the port; open streams end. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MetricsServer is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.address[0]
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
        return f"http://{format_address(shown, self.port)}"

    def _fail(self, what: str) -> MetricsAddressError:
        where = f"{self.manifest}: " if self.manifest else ""
        return MetricsAddressError(f"{where}{KEY}: {what}")

    def _bind(self, host: str, port: int) -> _Server:
        shown = format_address(host, port)
        if not 0 <= port <= 65535:
            raise self._fail(f"port {port} in {shown} is outside 0-65535")
        try:
            # an ASCII host as bytes: given a str, getaddrinfo loads the idna codec (with
            # unicodedata, ~0.4 MB) even for an IP address
            name: str | bytes = host.encode() if host.isascii() else host
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise self._fail(f"cannot resolve the host of {shown}: {exc.strerror}") from None
        family, _, _, _, sockaddr = infos[0]
        try:
            return _Server((str(sockaddr[0]), port), family, self)
        except OSError as exc:
            raise self._fail(self._why(exc, host, port, shown)) from None

    @staticmethod
    def _why(exc: OSError, host: str, port: int, shown: str) -> str:
        if exc.errno == errno.EADDRINUSE:
            holder = listener_on(port)
            if holder is None:
                who = "another socket"
            elif holder.pid is None:
                who = f"a process we cannot see ({holder.hidden_why()})"
            else:
                who = f"pid {holder.pid} ({holder.cmdline})"
            return f'{shown} is already in use by {who}; choose another address, or "" to turn metrics off'
        if exc.errno == errno.EADDRNOTAVAIL:
            return f"{host} is not an address of this machine ({shown})"
        if exc.errno == errno.EACCES:
            return f"permission denied to listen on {shown} (ports below 1024 need root)"
        return f"cannot listen on {shown}: {exc.strerror or exc}"

    # -- requests ----------------------------------------------------------

    def dispatch(self, request: Request) -> Response:
        """The response to ``request``: route lookup, loopback Host check, errors as 500."""
        if _is_loopback(self.address[0]) and not _is_loopback(_host_of(request.headers.get("host", "localhost"))):
            return Response.text("this endpoint answers only to localhost\n", 403)
        handler = self.route_for(request.path)
        if handler is None:
            return Response.text(f"no page {request.path}; try {', '.join(sorted(self.routes))}\n", 404)
        try:
            return handler(request)
        except Exception as exc:  # one broken route must not kill the server thread
            log.exception("metrics.route_failed", path=request.path)
            return Response.text(f"internal error in {request.path}: {exc}\n", 500)

    def route_for(self, path: str) -> Handler | None:
        """The handler of ``path``: an exact route, else the longest route ending in
        "/" that ``path`` extends (``/api/logs/`` serves ``/api/logs/NAME``)."""
        handler = self.routes.get(path)
        if handler is not None:
            return handler
        prefixes = [p for p in self.routes if len(p) > 1 and p.endswith("/") and path.startswith(p) and len(path) > len(p)]
        return self.routes[max(prefixes, key=len)] if prefixes else None

    def _index(self, request: Request) -> Response:
        links = "".join(f'<li><a href="{path}">{path}</a></li>' for path in sorted(self.routes) if path != "/")
        page = f"<!doctype html><title>supervisord-lite</title><h1>supervisord-lite</h1><ul>{links}</ul>\n"
        return Response(body=page.encode(), content_type="text/html; charset=utf-8")

    def _metrics(self, request: Request) -> Response:
        body, content_type = self.metrics.render()
        return Response(body=body, content_type=content_type)

    def _healthz(self, request: Request) -> Response:
        """200 while the daemon works: its snapshot is readable and ``health`` has no complaint."""
        try:
            snap = self.get_snapshot()
            problem = self.health() if self.health is not None else None
        except Exception as exc:
            return Response.json({"status": "error", "problem": f"cannot read the supervisor's state: {exc}"}, 503)
        states = Counter(s.state.value for s in snap.services)
        data = {
            "status": "ok" if problem is None else "unhealthy",
            "name": snap.name,
            "manifest": snap.manifest,
            "pid": snap.pid,
            "uptime_seconds": round(max(time.time() - snap.started_at, 0.0), 3),
            "services": len(snap.services),
            "states": dict(sorted(states.items())),
            "event_streams": {"open": self.open_streams, "limit": self.max_streams},
        }
        if problem is not None:
            data["problem"] = problem
        return Response.json(data, 200 if problem is None else 503)
