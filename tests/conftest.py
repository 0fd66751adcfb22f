"""Shared test helpers: free loopback ports, the anyio backend, process cleanup."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKES = ROOT / "tests" / "fakes"
PYTHON = sys.executable


if TYPE_CHECKING:
    from tests.integration.harness import Platform


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    """A manifest of demo services in tmp_path, driven by the real `svc` CLI; every
    process it started is gone after the test (see tests/integration/harness.py)."""
    from tests.integration.harness import Platform

    p = Platform(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture(autouse=True)
def private_registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own port registry (and every svc and daemon it starts inherits it):
    no test reads or writes the user's ~/.local/state/svc."""
    path = tmp_path_factory.mktemp("registry") / "registry.json"
    monkeypatch.setenv("SVC_REGISTRY", str(path))
    return path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """n distinct free ports (all held open together while choosing them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def ports_kept_from_outgoing_connections(ports: Iterable[int], wait: float = 0) -> Iterator[set[int]]:
    """Keep the kernel from giving ``ports`` to outgoing connections while the block runs;
    yields the ports that could not be kept within ``wait`` seconds (something holds them).

    Each port gets a socket bound to 127.0.0.1 with SO_REUSEADDR that never listens. Linux
    never picks a bound port as the local port of a connect(), yet a server that sets
    SO_REUSEADDR too (the demo, redis, node, postgres do) still binds and listens on it.
    For tests whose fixed ports lie in the ephemeral range (32768-60999), where any
    connection on the machine could otherwise hold one of them for seconds. The end of a
    connection that closed first holds its port for 60 s in TIME-WAIT, and that blocks a
    server's bind even with SO_REUSEADDR: ``wait=65`` outlasts it."""
    import time

    held: list[socket.socket] = []
    taken = set(ports)
    deadline = time.monotonic() + wait
    try:
        while True:
            for port in sorted(taken):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    sock.close()
                else:
                    held.append(sock)
                    taken.discard(port)
            if not taken or time.monotonic() >= deadline:
                break
            time.sleep(0.5)  # a TIME-WAIT ends on the kernel's clock; nothing to wait on
        yield taken
    finally:
        for sock in held:
            sock.close()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> object:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    import time

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate!r} (last: {last!r})")


def raw_exchange(path: os.PathLike[str], payload: bytes, *, shutdown_write: bool = True, timeout: float = 10) -> bytes:
    """Send ``payload`` raw, then read until the daemon closes (a reset counts as closed)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(os.fspath(path))
        try:
            s.sendall(payload)
            if shutdown_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed before taking everything: allowed
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
