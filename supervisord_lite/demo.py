"""A small stand-in HTTP service: the demo platform's services and the tests' fake.

Run it as ``python -m supervisord_lite.demo --port N [options]``. It serves
``/health`` (200 "ok", or 500 after ``--fail-health-after``) and a small HTML page
naming the service on every other path, and logs each request to stdout. The
options make it misbehave the ways real services do (slow start, crash, ignore
SIGTERM, leave grandchildren behind, flood its log, leak memory), so the
supervisor's tests can use one well-known program for every fault.

``--record FILE`` appends one JSON line per lifecycle event, stamped with the
service's own clock, so a test can assert start order without parsing logs::

    {"event": "spawned" | "listening" | "stopping" | ..., "name": ..., "pid": ..., "time": ...}

Standard library only, imported before the port is bound: once the port accepts,
HTTP is served at once, as with a real server (readiness lag is then the
supervisor's, not ours).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import socket
import threading
import time
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

_out_lock = threading.Lock()


def log(message: str) -> None:
    """One line to stdout, flushed at once (the supervisor timestamps it)."""
    with _out_lock:
        try:
            sys.stdout.write(message + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):  # nobody reads our output any more
            pass


def log_unlocked(message: str) -> None:
    """For signal handlers: straight to fd 1, no lock, no buffer."""
    try:
        os.write(1, (message + "\n").encode())
    except OSError:
        pass


class Recorder:
    """Appends lifecycle events to ``--record FILE``: one short O_APPEND write each,
    so lines from many services sharing one file never interleave."""

    def __init__(self, path: str | None, name: str) -> None:
        self.path = path
        self.name = name

    def __call__(self, event: str, **extra: object) -> None:
        if not self.path:
            return
        import json

        entry = {"event": event, "name": self.name, "pid": os.getpid(), "time": time.time(), **extra}
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)


def read_records(path: str | os.PathLike[str]) -> list[dict[str, object]]:
    """The events a ``--record FILE`` holds, in the order they were written
    (an absent file holds none). For tests: ``[e["name"] for e in read_records(f)
    if e["event"] == "listening"]`` is the order in which services came up."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    complete = text.split("\n")[:-1]  # a line still being written has no newline yet
    return [json.loads(line) for line in complete if line.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env_port = os.environ.get("PORT")
    p = argparse.ArgumentParser(
        prog="python -m supervisord_lite.demo",
        description="A stand-in HTTP service for the demo platform and for tests.",
    )
    p.add_argument("--port", type=int, default=int(env_port) if env_port else None,
                   help="TCP port to listen on (default: $PORT)")
    p.add_argument("--bind", default=os.environ.get("DEMO_BIND", "127.0.0.1"), metavar="HOST",
                   help="address to bind (default $DEMO_BIND, else 127.0.0.1; containers set 0.0.0.0)")
    p.add_argument("--name", default=os.environ.get("SVC_SERVICE", "demo"),
                   help="service name shown on / and in records (default: $SVC_SERVICE)")
    p.add_argument("--description", default="", help="one line shown on the / page")
    p.add_argument("--delay", type=float, default=0.0, metavar="SECONDS", help="sleep before binding the port")
    p.add_argument("--crash-after", type=float, default=None, metavar="SECONDS",
                   help="exit with --exit-code this long after binding")
    p.add_argument("--exit-code", type=int, default=None, metavar="N",
                   help="exit status for --crash-after (default 1) and --oneshot (default 0)")
    p.add_argument("--fail-health-after", type=float, default=None, metavar="SECONDS",
                   help="/health answers 500 from this long after binding")
    p.add_argument("--ignore-sigterm", action="store_true", help="log SIGTERM and keep running")
    p.add_argument("--grandchild", action="store_true",
                   help="spawn a child that sleeps forever in our process group")
    p.add_argument("--daemonize-grandchild", action="store_true",
                   help="double-fork + setsid a sleeper that escapes our process group")
    p.add_argument("--grandchild-lifetime", type=float, default=None, metavar="SECONDS",
                   help="grandchildren exit after this long (default: never)")
    p.add_argument("--flood-bytes", type=int, default=0, metavar="N",
                   help="write N bytes of log lines as fast as possible once listening")
    p.add_argument("--record", default=None, metavar="FILE", help="append JSON lifecycle events to FILE")
    p.add_argument("--ready-line", default=None, metavar="TEXT",
                   help="print TEXT once up (listening, or started for --no-port), after some earlier lines")
    p.add_argument("--leak-mb-per-second", type=float, default=0.0, metavar="N",
                   help="allocate and hold N MB more every second")
    p.add_argument("--no-port", action="store_true", help="a worker: no port, log a heartbeat")
    p.add_argument("--heartbeat", type=float, default=1.0, metavar="SECONDS",
                   help="heartbeat period for --no-port (default 1)")
    p.add_argument("--oneshot", type=float, default=None, metavar="SECONDS",
                   help="a task (a migration): work this long, then exit 0 (or --exit-code)")
    args = p.parse_args(argv)
    if args.port is None and not (args.no_port or args.oneshot is not None):
        p.error("--port is required (or $PORT, or --no-port / --oneshot)")
    return args


# -- grandchildren ---------------------------------------------------------------

_SLEEPER = """
import signal, sys, time
if sys.argv[1] == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
end = time.monotonic() + float(sys.argv[2]) if sys.argv[2] else None
while end is None or time.monotonic() < end:
    time.sleep(3600 if end is None else max(0.0, min(3600, end - time.monotonic())))
"""


def spawn_grandchild(ignore_sigterm: bool, lifetime: float | None) -> int:
    """A sleeper in our process group (and our session); it keeps our stdout open,
    as real workers forked by a service do."""
    import subprocess

    child = subprocess.Popen(
        [sys.executable, "-c", _SLEEPER, "1" if ignore_sigterm else "0", "" if lifetime is None else str(lifetime)],
        stdin=subprocess.DEVNULL,
    )
    return child.pid


def daemonize_grandchild(ignore_sigterm: bool, lifetime: float | None) -> int:
    """Double-fork + setsid: a sleeper in a new session that no process-group kill
    reaches and whose parent is gone. Returns its pid. Call before starting threads."""
    r, w = os.pipe()
    first = os.fork()
    if first == 0:  # the intermediate child
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.closerange(3, w)
            os.write(w, str(os.getpid()).encode())
            os.close(w)
            os.closerange(w + 1, 1024)
            signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_sigterm else signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            end = None if lifetime is None else time.monotonic() + lifetime
            while end is None or time.monotonic() < end:
                time.sleep(3600 if end is None else max(0.0, min(3600.0, end - time.monotonic())))
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(first, 0)
    with os.fdopen(r, "rb") as pipe:
        data = pipe.read()
    return int(data)


# -- background behaviours ---------------------------------------------------------

def start_thread(target: object, *args: object) -> None:
    threading.Thread(target=target, args=args, daemon=True).start()  # type: ignore[arg-type]


def flood(name: str, nbytes: int) -> None:
    line = (f"{name}: flood " + "x" * 90)[:96]
    written = 0
    n = 0
    buf = sys.stdout.buffer
    while written < nbytes:
        chunk = "".join(f"{line} {i:010d}\n" for i in range(n, n + 512)).encode()
        chunk = chunk[: nbytes - written]
        n += 512
        with _out_lock:
            try:
                buf.write(chunk)
                buf.flush()
            except (BrokenPipeError, ValueError):
                return
        written += len(chunk)
    log(f"{name}: flood done ({written} bytes)")


def leak(name: str, mb_per_second: float) -> None:
    held: list[bytes] = []
    step = max(1, int(mb_per_second * 1024 * 1024 / 10))
    ticks = 0
    while True:
        held.append(b"\x01" * step)  # filled, so the pages really count in RSS
        ticks += 1
        if ticks % 10 == 0:
            log(f"{name}: holding {len(held) * step / 1048576:.0f} MB")
        time.sleep(0.1)


def crash_later(name: str, seconds: float, code: int, record: Recorder) -> None:
    time.sleep(seconds)
    record("crashing", exit_code=code)
    log(f"{name}: crashing with exit code {code}")
    os._exit(code)


# -- HTTP --------------------------------------------------------------------------

def make_server(sock: socket.socket, name: str, description: str, unhealthy_at: float | None) -> ThreadingHTTPServer:
    """An HTTP server on the already listening ``sock``."""
    import html
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(name)}</title></head><body>"
        f"<h1>{html.escape(name)}</h1><p>{html.escape(description)}</p>"
        f"<p>A supervisord-lite demo stand-in, pid {os.getpid()}. <a href='/health'>/health</a></p>"
        "</body></html>\n"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "svc-demo"
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?", 1)[0] == "/health":
                if unhealthy_at is not None and time.monotonic() >= unhealthy_at:
                    self._send(500, b"unhealthy\n", "text/plain")
                else:
                    self._send(200, b"ok\n", "text/plain")
            else:
                self._send(200, page, "text/html; charset=utf-8")

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log(f"{name}: {self.address_string()} {format % args}")

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = sock.family

    server = Server(sock.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    return server


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


# -- main --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> NoReturn:
    args = parse_args(argv)
    name: str = args.name
    record = Recorder(args.record, name)

    def on_sigterm(signum: int, _frame: object) -> None:
        # Runs in the main thread, maybe while it (or the flood thread) holds the
        # output lock: write around it, or a stop could deadlock.
        if args.ignore_sigterm and signum == signal.SIGTERM:
            record("sigterm_ignored")
            log_unlocked(f"{name}: got SIGTERM, ignoring it")
            return
        record("stopping", signal=signal.Signals(signum).name)
        log_unlocked(f"{name}: got {signal.Signals(signum).name}, stopping")
        os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    record("spawned")
    log(f"{name}: spawned, pid {os.getpid()}")

    # Forks first, while we have a single thread.
    if args.daemonize_grandchild:
        pid = daemonize_grandchild(args.ignore_sigterm, args.grandchild_lifetime)
        record("daemonized_grandchild", child_pid=pid)
        log(f"{name}: daemonized a grandchild, pid {pid} (new session)")
    if args.grandchild:
        pid = spawn_grandchild(args.ignore_sigterm, args.grandchild_lifetime)
        record("grandchild", child_pid=pid)
        log(f"{name}: spawned a grandchild, pid {pid} (same process group)")

    if args.ready_line is not None:
        log(f"{name}: loading settings")
        log(f"{name}: warming caches")
    if args.delay > 0:
        log(f"{name}: slow start, {args.delay:g}s before listening")
        time.sleep(args.delay)

    if args.oneshot is not None:
        run_oneshot(args, record)

    server: ThreadingHTTPServer | None = None
    if not args.no_port:
        import http.server  # noqa: F401 (the import is the slow part: do it before the port opens)

        try:
            sock = listen(args.bind, args.port)
        except OSError as e:
            record("bind_failed", error=e.strerror or str(e))
            log(f"{name}: cannot listen on {args.bind}:{args.port}: {e.strerror or e}")
            os._exit(1)
        record("listening", port=args.port)
        log(f"{name}: listening on http://{args.bind}:{args.port}/")
        unhealthy_at = None if args.fail_health_after is None else time.monotonic() + args.fail_health_after
        server = make_server(sock, name, args.description, unhealthy_at)
    else:
        record("started")
        log(f"{name}: worker started (no port)")
    if args.ready_line is not None:
        log(args.ready_line)

    if args.crash_after is not None:
        start_thread(crash_later, name, args.crash_after, 1 if args.exit_code is None else args.exit_code, record)
    if args.flood_bytes > 0:
        start_thread(flood, name, args.flood_bytes)
    if args.leak_mb_per_second > 0:
        start_thread(leak, name, args.leak_mb_per_second)

    if server is not None:
        server.serve_forever(poll_interval=3600)  # shutdown() is never called: SIGTERM exits
    beat = 0
    while True:
        time.sleep(args.heartbeat)
        beat += 1
        log(f"{name}: heartbeat {beat}")


def run_oneshot(args: argparse.Namespace, record: Recorder) -> NoReturn:
    name = args.name
    log(f"{name}: task started ({args.oneshot:g}s of work)")
    end = time.monotonic() + args.oneshot
    step = 0
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(0.5, left))
        step += 1
        log(f"{name}: task step {step}")
    code = 0 if args.exit_code is None else args.exit_code
    record("done", exit_code=code)
    log(f"{name}: task done, exit {code}")
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
