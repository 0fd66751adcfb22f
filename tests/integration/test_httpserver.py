"""The metrics HTTP server on real loopback sockets."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from supervisord_lite.daemon.httpserver import (
    MetricsAddressError,
    MetricsServer,
    Request,
    Response,
    parse_address,
)
from supervisord_lite.host.portinfo import listener_on
from supervisord_lite.core.snapshot import ServiceSnapshot, SupervisorSnapshot
from supervisord_lite.core.states import ServiceState
from tests.conftest import free_port, wait_until


def snapshot(*services: ServiceSnapshot) -> SupervisorSnapshot:
    return SupervisorSnapshot(
        name="demo", manifest="/srv/svc.toml", pid=os.getpid(), started_at=time.time() - 10, services=services
    )


SNAP = snapshot(
    ServiceSnapshot("postgres", "infrastructure", 5433, ServiceState.READY, port_up=True, restarts=1),
    ServiceSnapshot("api", "backend", 8000, ServiceState.BACKOFF, port_up=False),
)


def get(server: MetricsServer, path: str, method: str = "GET", host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        headers = {"Host": host} if host else {}
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer(("127.0.0.1", 0), lambda: SNAP)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_metrics_are_served_in_the_text_format(server: MetricsServer) -> None:
    server.metrics.observe_probe("postgres", 5433, 0.0004)
    status, headers, body = get(server, "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    up = {s.labels["service"]: s.value for s in families["svc_port_up"].samples}
    assert up == {"postgres": 1, "api": 0}
    assert "svc_port_probe_duration_seconds" in families
    assert "process_resident_memory_bytes" in families  # the daemon's own


def test_healthz(server: MetricsServer) -> None:
    status, headers, body = get(server, "/healthz")
    assert status == 200
    assert headers["content-type"] == "application/json"
    data = json.loads(body)
    assert data["status"] == "ok"
    assert data["services"] == 2
    assert data["states"] == {"backoff": 1, "ready": 1}
    assert 9 < data["uptime_seconds"] < 600


def test_healthz_reports_a_health_problem_as_503() -> None:
    with MetricsServer(("127.0.0.1", 0), lambda: SNAP, health=lambda: "supervisor loop stalled for 42s") as srv:
        status, _, body = get(srv, "/healthz")
    assert status == 503
    assert json.loads(body)["problem"] == "supervisor loop stalled for 42s"


def test_a_broken_snapshot_is_a_500_and_a_503_not_a_dead_server() -> None:
    def broken() -> SupervisorSnapshot:
        raise RuntimeError("no snapshot yet")

    with MetricsServer(("127.0.0.1", 0), broken) as srv:
        status, _, body = get(srv, "/metrics")
        assert status == 500
        assert b"no snapshot yet" in body
        status, _, body = get(srv, "/healthz")
        assert status == 503
        assert "no snapshot yet" in json.loads(body)["problem"]
        assert get(srv, "/")[0] == 200  # still serving


def test_head_unknown_paths_and_other_methods(server: MetricsServer) -> None:
    status, headers, body = get(server, "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    status, _, body = get(server, "/nope")
    assert status == 404
    assert b"/metrics" in body and b"/healthz" in body
    status, headers, _ = get(server, "/metrics", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, _, body = get(server, "/")
    assert status == 200 and b'href="/metrics"' in body


def test_only_loopback_host_names_are_answered_on_loopback(server: MetricsServer) -> None:
    """A page on evil.example that rebinds its name to 127.0.0.1 gets nothing."""
    assert get(server, "/metrics", host=f"evil.example:{server.port}")[0] == 403
    assert get(server, "/metrics", host=f"localhost:{server.port}")[0] == 200
    assert get(server, "/metrics", host=f"127.0.0.1:{server.port}")[0] == 200


def raw(server: MetricsServer, request: bytes) -> bytes:
    """The whole answer to ``request`` sent as is, then nothing more (the server closes
    after one answer)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        return sock.makefile("rb").read()


def test_the_host_check_reads_the_header_in_any_case(server: MetricsServer) -> None:
    """Header names are case-insensitive: a ``host:`` header once slipped past the check."""
    for name in (b"Host", b"host", b"HOST", b"hOsT"):
        answer = raw(server, b"GET /metrics HTTP/1.1\r\n" + name + b": evil.example\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 403 "), (name, answer[:80])
        answer = raw(server, b"GET /metrics HTTP/1.1\r\n" + name + b": localhost\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ") and b"\n# TYPE " in answer, (name, answer[:80])


def test_malformed_or_huge_requests_get_a_4xx_and_the_server_goes_on(server: MetricsServer) -> None:
    assert raw(server, b"this is not http\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(server, b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"x" * 100_000 + b"\r\n\r\n"
    assert raw(server, huge).startswith(b"HTTP/1.1 431 ")
    posted = raw(server, b"POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300_000)
    assert posted.startswith(b"HTTP/1.1 405 "), posted[:80]  # the unread body does not reset the answer away
    for method in (b"OPTIONS", b"FOO", b"DELETE"):
        answer = raw(server, method + b" /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD" in answer, answer[:80]
    cookies = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nCookie: " + b"c=1; " * 3000 + b"\r\n\r\n"
    assert raw(server, cookies).startswith(b"HTTP/1.1 200 ")  # 15 KB of a browser's localhost cookies
    assert raw(server, b"") == b""  # connected and left: nothing to answer
    assert get(server, "/healthz")[0] == 200


def test_a_scrape_does_not_load_http_server_or_email() -> None:
    """The request parser is h11 (~0.3 MB); http.server with email was ~2 MB the daemon kept."""
    probe = (
        "import socket, sys\n"
        "from supervisord_lite.daemon.httpserver import MetricsServer\n"
        "from supervisord_lite.core.snapshot import SupervisorSnapshot\n"
        "snap = SupervisorSnapshot(name='demo', manifest='/srv/svc.toml', pid=1, started_at=0.0, services=())\n"
        "with MetricsServer(('127.0.0.1', 0), lambda: snap) as srv:\n"
        "    with socket.create_connection(('127.0.0.1', srv.port), timeout=10) as s:\n"
        "        s.sendall(b'GET /metrics HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n')\n"
        "        answer = s.makefile('rb').read()\n"
        "print(answer.split(b' ')[1].decode(), sorted(m for m in ('http.server', 'http.client', 'email') if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=root, check=True)
    assert out.stdout.split("\n")[-2] == "200 []", out.stdout


def test_extra_routes_and_a_failing_route() -> None:
    def status_api(request: Request) -> Response:
        return Response.json({"services": [s.name for s in SNAP.services], "q": request.query.get("x", [])})

    def broken(request: Request) -> Response:
        raise ValueError("bad template")

    routes = {"/api/status": status_api, "/broken": broken}
    with MetricsServer(("127.0.0.1", 0), lambda: SNAP, extra_routes=routes) as srv:
        status, _, body = get(srv, "/api/status?x=1")
        assert status == 200
        assert json.loads(body) == {"services": ["postgres", "api"], "q": ["1"]}
        status, _, body = get(srv, "/broken")
        assert status == 500 and b"bad template" in body
        assert get(srv, "/api/status")[0] == 200


def test_a_stream_flows_until_the_server_stops() -> None:
    def events(request: Request) -> Response:
        def chunks() -> Iterator[bytes]:
            n = 0
            while not request.stopping.is_set():
                yield f"data: {n}\n\n".encode()
                n += 1
                request.stopping.wait(0.02)

        return Response(body=chunks(), content_type="text/event-stream")

    srv = MetricsServer(("127.0.0.1", 0), lambda: SNAP, extra_routes={"/events": events})
    srv.start()
    try:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        sock.sendall(b"GET /events HTTP/1.0\r\nHost: localhost\r\n\r\n")
        received = b""
        while b"data: 2\n\n" not in received:
            chunk = sock.recv(4096)
            assert chunk, "stream ended early"
            received += chunk
        assert b"text/event-stream" in received
    finally:
        srv.stop()
    while sock.recv(4096):  # ends (EOF) because the server stopped; timeout fails the test
        pass
    sock.close()


def _ticking_stream(request: Request) -> Response:
    def chunks() -> Iterator[bytes]:
        while not request.stopping.is_set():
            yield b"data: tick\n\n"
            request.stopping.wait(0.05)

    return Response(body=chunks(), content_type="text/event-stream")


def _open_stream(port: int) -> tuple[socket.socket, bytes]:
    """Connect to /events; returns the socket and the response's first bytes (its status line)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /events HTTP/1.0\r\nHost: localhost\r\n\r\n")
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return sock, received


def test_event_streams_beyond_the_cap_get_a_clear_503_and_a_freed_slot_is_reused() -> None:
    srv = MetricsServer(("127.0.0.1", 0), lambda: SNAP, extra_routes={"/events": _ticking_stream}, max_streams=3)
    srv.start()
    held: list[socket.socket] = []
    try:
        for _ in range(3):
            sock, head = _open_stream(srv.port)
            held.append(sock)
            assert head.startswith(b"HTTP/1.1 200"), head
        refused, head = _open_stream(srv.port)
        with refused:
            rest = head + refused.makefile("rb").read()  # a whole answer, then the server closes
        assert rest.startswith(b"HTTP/1.1 503"), rest
        assert b"Retry-After: 5" in rest and b"too many event streams open (the limit is 3)" in rest
        # the rest of the server is not held up by the cap
        assert get(srv, "/healthz")[0] == 200 and get(srv, "/metrics")[0] == 200
        # a stream that ends gives its slot back
        held.pop().close()

        def reopened() -> bool:
            sock, head = _open_stream(srv.port)
            if head.startswith(b"HTTP/1.1 200"):
                held.append(sock)
                return True
            sock.close()
            return False

        wait_until(reopened, timeout=10, interval=0.05, what="the freed stream slot to be reused")
    finally:
        srv.stop()
        for sock in held:
            sock.close()


def test_connections_beyond_the_cap_get_a_503_without_a_thread_each() -> None:
    srv = MetricsServer(("127.0.0.1", 0), lambda: SNAP, max_connections=4)
    srv.start()
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(4)]  # send nothing
    try:
        wait_until(lambda: threading.active_count() == threads_before + 4, timeout=10, what="a thread per idle connection")
        answers = []
        for _ in range(50):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as extra:
                extra.sendall(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
                answers.append(extra.makefile("rb").read())
        assert all(a.startswith(b"HTTP/1.1 503") and b"too many requests at once (the limit is 4)" in a for a in answers), answers[0]
        assert threading.active_count() == threads_before + 4  # refused from the accepting thread
    finally:
        for sock in idle:
            sock.close()
    # once the idle clients leave, every request is served again
    wait_until(lambda: get(srv, "/healthz")[0] == 200, timeout=10, what="/healthz served again")
    wait_until(lambda: threading.active_count() == threads_before, timeout=10, what="the handler threads to end")
    srv.stop()


def test_port_0_and_stop_frees_the_port() -> None:
    srv = MetricsServer(("127.0.0.1", 0), lambda: SNAP)
    srv.start()
    port = srv.port
    assert port > 0 and srv.url == f"http://127.0.0.1:{port}"
    srv.stop()
    srv.stop()  # twice is fine
    again = MetricsServer(("127.0.0.1", port), lambda: SNAP)
    again.start()
    try:
        assert get(again, "/healthz")[0] == 200
    finally:
        again.stop()


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = MetricsServer(("::1", 0), lambda: SNAP)
        srv.start()
    except MetricsAddressError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        conn = http.client.HTTPConnection("::1", srv.port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
        assert srv.url == f"http://[::1]:{srv.port}"
    finally:
        srv.stop()


@pytest.fixture
def foreign_http_server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: (l := listener_on(port)) is not None and l.pid == proc.pid, what="python -m http.server")
        yield port, proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_a_taken_address_names_the_key_and_the_process(foreign_http_server: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, proc = foreign_http_server
    srv = MetricsServer(("127.0.0.1", port), lambda: SNAP, manifest="/srv/svc.toml")
    with pytest.raises(MetricsAddressError) as err:
        srv.start()
    message = str(err.value)
    assert message.startswith(f"/srv/svc.toml: supervisor.metrics: 127.0.0.1:{port} is already in use by pid {proc.pid} (")
    assert "-m http.server" in message
    with pytest.raises(RuntimeError):
        _ = srv.port  # nothing was half-started


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        (("no-such-host.invalid", 9108), "cannot resolve the host of no-such-host.invalid:9108"),
        (("192.0.2.1", 9108), "192.0.2.1 is not an address of this machine"),
        (("127.0.0.1", 70000), "port 70000 in 127.0.0.1:70000 is outside 0-65535"),
    ],
)
def test_unusable_addresses_are_clear_errors(address: tuple[str, int], fragment: str) -> None:
    with pytest.raises(MetricsAddressError, match="^supervisor.metrics: ") as err:
        MetricsServer(address, lambda: SNAP).start()
    assert fragment in str(err.value)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_address("[::1]:9108") == ("::1", 9108)
    assert parse_address(":9108") == ("127.0.0.1", 9108)
    for bad in ("9108", "localhost", "127.0.0.1:http", "127.0.0.1:"):
        with pytest.raises(MetricsAddressError, match='supervisor.metrics: ".*" is not HOST:PORT'):
            parse_address(bad)
    with pytest.raises(MetricsAddressError, match="outside 0-65535"):
        parse_address("127.0.0.1:99999")


def test_scrapes_during_constant_change_always_see_one_whole_snapshot() -> None:
    """Every service of a generation g has restarts (and the exported total) == g, and
    state/port_up follow g's parity.

    A scrape mixing two snapshots would show two values of g.
    """
    names = [f"s{i}" for i in range(40)]

    def generation(g: int) -> SupervisorSnapshot:
        state = ServiceState.READY if g % 2 == 0 else ServiceState.BACKOFF
        return snapshot(
            *(ServiceSnapshot(n, "backend", 9000 + i, state, port_up=g % 2 == 0, restarts=g, restarts_total=g) for i, n in enumerate(names))
        )

    current = [generation(0)]
    stop = threading.Event()

    def publisher() -> None:
        g = 0
        while not stop.is_set():
            g += 1
            current[0] = generation(g)  # publish: one reference swap
            srv.metrics.observe_probe(names[g % len(names)], 9000, 0.001)
            stop.wait(0.001)  # pace, so the scrapers get the GIL too

    srv = MetricsServer(("127.0.0.1", 0), lambda: current[0])
    srv.start()
    failures: list[str] = []
    generations: set[int] = set()

    def scraper() -> None:
        for _ in range(15):
            status, _, body = get(srv, "/metrics")
            if status != 200:
                failures.append(f"status {status}")
                continue
            families = {f.name: f for f in text_string_to_metric_families(body.decode())}
            gs = {s.value for s in families["svc_service_restarts"].samples}
            ups = {s.value for s in families["svc_port_up"].samples}
            ready = {s.value for s in families["svc_service_state"].samples if s.labels["state"] == "ready"}
            if len(gs) != 1:
                failures.append(f"mixed generations {sorted(gs)}")
                continue
            g = int(gs.pop())
            generations.add(g)
            want = 1.0 if g % 2 == 0 else 0.0
            if ups != {want} or ready != {want}:
                failures.append(f"generation {g}: port_up {ups}, ready {ready}")

    pub = threading.Thread(target=publisher)
    pub.start()
    try:
        scrapers = [threading.Thread(target=scraper) for _ in range(3)]
        for t in scrapers:
            t.start()
        for t in scrapers:
            t.join()
    finally:
        stop.set()
        pub.join()
        srv.stop()
    assert failures == []
    assert len(generations) > 10  # the state really changed under the scrapes
