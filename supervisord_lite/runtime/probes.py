"""Is the service up? TCP, HTTP and exec probes, and a cheap watcher for ports opening.

Every probe returns a ``ProbeResult`` and never raises for a failing service: a
refused connection, a 500 or a non-zero exit is a result, not an exception.

``PortWatcher`` answers "tell me when port P starts (or stops) listening" for many
ports at once with one look at the kernel's socket table per tick: a netlink
sock_diag dump of listening TCP sockets (about 50 microseconds, filtered in the
kernel), falling back to /proc/net/tcp{,6} when netlink is not available. It
ticks every few milliseconds only while someone waits.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

from supervisord_lite.core.model import ProbeSpec
from supervisord_lite.host import sockdiag
from supervisord_lite.host.portinfo import listening_ports
from supervisord_lite.runtime import portfilter

__all__ = [
    "ListeningPorts",
    "PortWatcher",
    "ProbeResult",
    "exec_probe",
    "http_probe",
    "run_probe",
    "tcp_probe",
]

_DETAIL_MAX = 300  # characters of an exec probe's output kept in the detail
_HTTP_HEAD_MAX = 8192


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    latency: float  # seconds the check took
    detail: str  # for people: "HTTP 200 OK", "connection refused", "exit 1: not ready"


def _describe_oserror(exc: BaseException) -> str:
    """Turn anyio's 'All connection attempts failed' into the cause a person wants."""
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, OSError) and cause.errno is not None:
        return (os.strerror(cause.errno) or str(cause)).lower()
    return str(cause) or type(cause).__name__


async def _connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to an IP address.

    Not ``anyio.connect_tcp``: that resolves even an IP literal through getaddrinfo in
    a worker thread, which costs a thread hop per probe and queues behind any other
    thread work (spawns) exactly when readiness should be noticed fastest."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        err = sock.connect_ex((host, port))
        if err in (errno.EINPROGRESS, errno.EAGAIN):
            await anyio.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


async def tcp_probe(port: int, timeout: float = 1.0, host: str = "127.0.0.1") -> ProbeResult:
    """Does ``host:port`` accept a TCP connection within ``timeout`` seconds?"""
    start = anyio.current_time()
    try:
        with anyio.fail_after(timeout):
            sock = await _connect(host, port)
        sock.close()
    except TimeoutError:
        return ProbeResult(False, anyio.current_time() - start, f"no answer from {host}:{port} within {timeout:g}s")
    except OSError as exc:
        return ProbeResult(False, anyio.current_time() - start, f"{host}:{port}: {_describe_oserror(exc)}")
    return ProbeResult(True, anyio.current_time() - start, f"{host}:{port} accepts connections")


#: After the status line, how long an HTTP probe waits for the service to close the
#: connection it asked to be closed, and how much more of the answer it reads meanwhile.
HTTP_CLOSE_GRACE = 0.5
_HTTP_DRAIN_MAX = 65536


async def _let_them_close(sock: socket.socket, grace: float = HTTP_CLOSE_GRACE) -> None:
    """Read on until the service closes the connection (it was sent "Connection: close"),
    for at most ``grace`` seconds and _HTTP_DRAIN_MAX bytes.

    The side that closes a TCP connection first keeps its port in TIME-WAIT for 60 s.
    Let that be the service: its port is the one it listens on, where a TIME-WAIT is
    harmless. Were it the probe, it would be one of the machine's ephemeral ports, and a
    service whose port lies in that range could not bind it for a minute ("Address already
    in use"), which a second instance of a platform, every probe interval, would meet. A
    service that keeps the connection open past ``grace`` is closed on: the probe's
    answer is already in, and closing with unread data resets rather than lingers."""
    left = _HTTP_DRAIN_MAX
    with anyio.move_on_after(grace), contextlib.suppress(OSError):
        while left > 0:
            try:
                chunk = sock.recv(min(left, 16384))
            except BlockingIOError:
                await anyio.wait_readable(sock)
                continue
            if not chunk:
                return
            left -= len(chunk)


async def http_probe(port: int, path: str, timeout: float = 2.0, host: str = "127.0.0.1") -> ProbeResult:
    """GET ``http://host:port/path``; ok when the status is 2xx or 3xx (redirects are not followed)."""
    if not path.startswith("/"):
        path = "/" + path
    url = f"http://{host}:{port}{path}"
    start = anyio.current_time()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: svc-probe\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1", errors="replace")
    head = b""
    sock: socket.socket | None = None
    closed_by_them = False
    try:
        with anyio.fail_after(timeout):
            sock = await _connect(host, port)
            while request:
                try:
                    request = request[sock.send(request):]
                except BlockingIOError:
                    await anyio.wait_writable(sock)
            while b"\n" not in head and len(head) < _HTTP_HEAD_MAX:
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    await anyio.wait_readable(sock)
                    continue
                if not chunk:
                    closed_by_them = True
                    break
                head += chunk
        latency = anyio.current_time() - start
        if not closed_by_them:
            await _let_them_close(sock)
    except TimeoutError:
        return ProbeResult(False, anyio.current_time() - start, f"GET {url}: no answer within {timeout:g}s")
    except OSError as exc:
        return ProbeResult(False, anyio.current_time() - start, f"GET {url}: {_describe_oserror(exc)}")
    finally:
        if sock is not None:
            anyio.notify_closing(sock)
            sock.close()
    status_line = head.split(b"\n", 1)[0].strip().decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        shown = status_line[:80] if status_line else "the connection closed without a response"
        return ProbeResult(False, latency, f"GET {url}: not an HTTP response: {shown!r}")
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    detail = f"HTTP {status} {reason}".rstrip()
    return ProbeResult(200 <= status < 400, latency, detail)


async def exec_probe(
    argv: Sequence[str],
    timeout: float = 2.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProbeResult:
    """Run ``argv``; ok on exit 0. On timeout its whole process group is killed.
    Its output (stdout and stderr) ends up, truncated, in the detail."""
    start = anyio.current_time()
    if not argv:
        return ProbeResult(False, 0.0, "the exec probe has an empty command")
    try:
        process = await anyio.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        return ProbeResult(False, anyio.current_time() - start, f"cannot run {argv[0]!r}: {exc.strerror or exc}")
    output = bytearray()
    eof = anyio.Event()
    finished = False

    async def read_output() -> None:
        assert process.stdout is not None
        try:
            while True:
                chunk = await process.stdout.receive(4096)
                if len(output) < 4 * _DETAIL_MAX:
                    output.extend(chunk)
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            eof.set()

    try:
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_output)
                await process.wait()
                finished = True
                with anyio.move_on_after(0.05):  # a background child may hold the pipe open
                    await eof.wait()
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)  # still our unreaped child: the group is ours
                await process.wait()
            await process.aclose()  # closes the pipe even when a background child still holds it
    latency = anyio.current_time() - start
    text = bytes(output).decode("utf-8", errors="replace").strip()
    if len(text) > _DETAIL_MAX:
        text = text[: _DETAIL_MAX - 3] + "..."
    if not finished:
        return ProbeResult(False, latency, f"{argv[0]!r} timed out after {timeout:g}s" + (f": {text}" if text else ""))
    rc = process.returncode
    assert rc is not None
    what = f"exit {rc}" if rc >= 0 else f"killed by {_signame(-rc)}"
    return ProbeResult(rc == 0, latency, what + (f": {text}" if text else ""))


def _signame(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


async def run_probe(
    spec: ProbeSpec,
    port: int | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProbeResult:
    """Check every condition of ``spec`` (tcp, http, exec), stopping at the first that fails.

    With a ``port``, the port must accept connections even when only ``exec`` is given
    (the spec: "when ready is given with a port, the port must accept too"); an http
    check implies that. Pass ``port=None`` to skip the port. ``log`` and ``after`` are the
    supervisor's business and ignored here. No condition at all is a success.
    """
    start = anyio.current_time()
    checks: list[Callable[[], Awaitable[ProbeResult]]] = []
    needs_port = spec.tcp or bool(spec.http)
    if needs_port and port is None:
        return ProbeResult(False, 0.0, "the probe checks a port but the service has none")
    if port is not None and spec.http:
        checks.append(lambda: http_probe(port, spec.http or "/", spec.timeout))
    elif port is not None:
        checks.append(lambda: tcp_probe(port, spec.timeout))
    if spec.exec:
        argv = spec.exec
        checks.append(lambda: exec_probe(argv, spec.timeout, env, cwd))
    details: list[str] = []
    for check in checks:
        result = await check()
        details.append(result.detail)
        if not result.ok:
            return ProbeResult(False, anyio.current_time() - start, result.detail)
    return ProbeResult(True, anyio.current_time() - start, "; ".join(details) or "nothing to check")


# -- which ports are listening -------------------------------------------------

_ADDRESS_AT = sockdiag.ADDRESS_AT
_LOOPBACK_REACHING = sockdiag.LOOPBACK_REACHING


class ListeningPorts:
    """Reads the set of listening TCP ports (all addresses, IPv4 and IPv6).

    Uses a netlink sock_diag dump (the kernel sends only listening sockets) over a socket
    it keeps open; when netlink fails, ``portinfo.listening_ports()`` for good (which tries
    a fresh dump, then reads /proc/net/tcp{,6}).
    """

    def __init__(self) -> None:
        self._dump = sockdiag.Dump()
        self.netlink = sockdiag.available()
        self.filtering = self.netlink  # the kernel takes a port filter (read_among)

    def read(self, loopback: set[int] | None = None) -> set[int]:
        """Every listening port; with ``loopback``, also add to it the ports with an IPv4
        socket on 127.0.0.1 or on every address (netlink only: the fallback adds none)."""
        if self.netlink:
            try:
                return self._read_netlink(loopback=loopback)
            except OSError:
                self.close()
                self.netlink = False
        return listening_ports()

    def read_among(self, ports: Collection[int], loopback: set[int] | None = None) -> set[int]:
        """Which of ``ports`` are listening: the kernel filters the dump (``runtime.portfilter``),
        so the cost does not grow with the sockets that listen on other ports. ``loopback``
        as for ``read``."""
        if not ports:
            return set()
        if self.netlink and self.filtering and len(ports) <= portfilter.WORTH_FILTERING:
            try:
                return self._read_netlink(portfilter.attribute(ports), loopback) & set(ports)
            except OSError:  # a kernel that refuses the filter: whole dumps from now on
                self.close()
                self.filtering = False
        return self.read(loopback) & set(ports)

    def close(self) -> None:
        self._dump.close()

    def _read_netlink(self, port_filter: bytes = b"", loopback: set[int] | None = None) -> set[int]:
        ports: set[int] = set()
        unpack_port, port_at = sockdiag.PORT.unpack_from, sockdiag.PORT_AT
        for family in sockdiag.FAMILIES:
            near = loopback is not None and family == socket.AF_INET
            for data, offset in self._dump.messages(family, port_filter):
                (port,) = unpack_port(data, offset + port_at)
                ports.add(port)
                if near and data[offset + _ADDRESS_AT : offset + _ADDRESS_AT + 4] in _LOOPBACK_REACHING:
                    loopback.add(port)  # type: ignore[union-attr]
        return ports


#: How long a tick's sighting of a port on loopback stands in for a connect (``seen_on_loopback``):
#: the waiter it woke asks at once, but a loop busy with a burst of a thousand wake-ups gets
#: to it late, and a connect then would only come later still
LOOPBACK_SEEN_MAX_AGE = 1.0


class PortWatcher:
    """Wait, cheaply and with a lag of a few milliseconds, until ports open or close.

    One read of the socket table per tick serves every waiting port. Two ways to run it:

    - the daemon starts ``run()`` once in its task group: one wake-up per tick in total,
      and nothing at all while nobody waits;
    - without ``run()``, waiters drive the ticks themselves; reads are still shared
      (at most one per ``interval``), but every waiter wakes up each tick.

    A port seen listening may belong to anyone, on any address. When the tick that saw
    it found an IPv4 socket on 127.0.0.1 or on every address, a connect to 127.0.0.1
    would be completed by the kernel (whether or not the program accepts): ``seen_on_loopback``
    says so for a short while, and a readiness check can take that instead of a connection
    of its own. Otherwise confirm with ``tcp_probe``.
    """

    def __init__(self, interval: float = 0.005, read_ports: Callable[[], set[int]] | None = None) -> None:
        self.interval = interval
        self._reader = ListeningPorts() if read_ports is None else None
        self._read_ports = read_ports if read_ports is not None else self._reader.read  # type: ignore[union-attr]
        # the real table is read for the waited ports only; an injected reader gives every port
        self._read_waited: Callable[[Collection[int], set[int] | None], set[int]] = (
            self._reader.read_among if self._reader is not None else lambda _ports, _loopback: self._read_ports()
        )
        self._loopback_seen: dict[int, tuple[float, float]] = {}  # port -> (when, read duration) of the tick
        self._pruned_at = -math.inf
        self._waiters: dict[tuple[int, bool], list[anyio.Event]] = {}
        self._wake = anyio.Event()
        self._running = False
        self._last_read = -math.inf
        self.reads = 0  # how many times the table was read (for tests and metrics)

    async def run(self) -> None:
        """The background ticker; runs until cancelled."""
        self._running = True
        try:
            while True:
                if not self._waiters:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                self._tick()
                await anyio.sleep(self.interval)
        finally:
            self._running = False
            self.close()

    async def wait_listening(self, port: int) -> None:
        """Return once something listens on TCP ``port`` (any address). No deadline: wrap it."""
        await self._wait(port, True)

    async def wait_closed(self, port: int) -> None:
        """Return once nothing listens on TCP ``port`` any more."""
        await self._wait(port, False)

    def seen_on_loopback(self, port: int, max_age: float = LOOPBACK_SEEN_MAX_AGE) -> float | None:
        """The duration of the read that, at most ``max_age`` seconds ago, saw ``port``
        listening where 127.0.0.1 reaches it and woke its waiter; None when no recent read
        did. Each sighting answers once."""
        seen = self._loopback_seen.pop(port, None)
        if seen is None or anyio.current_time() - seen[0] > max_age:
            return None
        return seen[1]

    def _tick(self) -> None:
        now = self._last_read = anyio.current_time()
        self.reads += 1
        loopback: set[int] = set()
        started = time.perf_counter()
        try:
            ports = self._read_waited({port for port, _listening in self._waiters}, loopback)
        except OSError:
            return
        took = time.perf_counter() - started
        if len(self._loopback_seen) > 256 and now - self._pruned_at > LOOPBACK_SEEN_MAX_AGE:
            self._pruned_at = now  # sightings nobody asked about (a waiter cancelled) go, once in a while
            self._loopback_seen = {p: s for p, s in self._loopback_seen.items() if now - s[0] <= LOOPBACK_SEEN_MAX_AGE}
        for key in [k for k in self._waiters if (k[0] in ports) == k[1]]:
            if key[1] and key[0] in loopback:
                self._loopback_seen[key[0]] = (now, took)
            for event in self._waiters.pop(key):
                event.set()

    async def _wait(self, port: int, listening: bool) -> None:
        key = (port, listening)
        event = anyio.Event()
        self._waiters.setdefault(key, []).append(event)
        try:
            if self._running:
                self._wake.set()
                await event.wait()
                return
            while not event.is_set():
                if anyio.current_time() - self._last_read >= self.interval * 0.9:
                    self._tick()
                if event.is_set():
                    break
                with anyio.move_on_after(self.interval):
                    await event.wait()
        finally:
            events = self._waiters.get(key)
            if events is not None and event in events:
                events.remove(event)
                if not events:
                    del self._waiters[key]
            if not self._running and not self._waiters:
                self.close()  # lazy mode: no socket kept open between waits

    def close(self) -> None:
        """Release the netlink socket (run() does this itself when cancelled)."""
        if self._reader is not None:
            self._reader.close()
