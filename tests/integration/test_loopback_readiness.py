"""Readiness from the socket table: a listener 127.0.0.1 reaches needs no connection of ours."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from supervisord_lite.core.model import ServiceSpec
from supervisord_lite.runtime.logs import ServiceLog
from supervisord_lite.runtime.probes import PortWatcher, ProbeResult
from supervisord_lite.runtime.serviceio import RealServiceIO
from tests.conftest import free_port

pytestmark = pytest.mark.anyio

#: listens on HOST:PORT (IPv6 only for an IPv6 address) and prints a line for each connection
#: it accepts (with the peer's port); with DETACH = 1 the main process exits 0 first and a child listens (a program
#: that puts itself in the background)
SERVICE = """
import os, socket, sys, time
host, port, detach = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if detach:
    parent = os.getpid()
    if os.fork():
        os._exit(0)
    while os.getppid() == parent:
        time.sleep(0.005)
family = socket.AF_INET6 if ":" in host else socket.AF_INET
sock = socket.socket(family, socket.SOCK_STREAM)
if family == socket.AF_INET6:
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((host, port))
sock.listen(16)
while True:
    conn, peer = sock.accept()
    print("accepted", peer[1], flush=True)
    conn.close()
"""


@asynccontextmanager
async def service(tmp_path: Path, instance: str, host: str, port: int, detach: bool = False) -> AsyncIterator[tuple[RealServiceIO, ServiceLog]]:
    """The service spawned as the daemon spawns it, with the port watcher running."""
    io = RealServiceIO()
    spec = ServiceSpec(name="svc", tier="backend", command=(sys.executable, "-c", SERVICE, host, str(port), "1" if detach else "0"), port=port)
    log = ServiceLog(tmp_path / "logs" / "svc.log", max_bytes=0, backups=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(io.run)
        proc = await io.spawn(spec, instance_id=instance, log=log, task_group=tg, on_line=None, extra_env={})
        try:
            yield io, log
        finally:
            with anyio.CancelScope(shield=True):
                await proc.stop(signal.SIGKILL, 2.0)
            tg.cancel_scope.cancel()


async def readiness(io: RealServiceIO, port: int) -> ProbeResult:
    """What a runner's readiness check does: wait for the port in the table, then probe it."""
    with anyio.fail_after(10):
        await io.wait_listening(port)
    return await io.tcp_probe(port, 1.0)


async def accepted_after_a_marker_connect(log: ServiceLog, port: int) -> int:
    """Connect once ourselves and wait until the service logged it: the count of connections it
    accepted up to ours, ours included (they queue in order, so any earlier one is counted)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as marker:
        mine = f"accepted {marker.getsockname()[1]}"
    with anyio.fail_after(10):
        while True:
            accepted = [line for line in log.tail() if "accepted " in line]
            if any(line.endswith(mine) for line in accepted):
                return len(accepted)
            await anyio.sleep(0.01)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
async def test_a_loopback_listener_is_ready_without_a_connection_of_ours(tmp_path: Path, instance: str, host: str) -> None:
    port = free_port()
    async with service(tmp_path, instance, host, port) as (io, log):
        result = await readiness(io, port)
        assert result.ok, result
        assert result.detail == f"127.0.0.1:{port} accepts connections"
        assert await accepted_after_a_marker_connect(log, port) == 1  # only ours


async def test_a_listener_127_0_0_1_does_not_reach_is_not_ready(tmp_path: Path, instance: str) -> None:
    port = free_port()
    async with service(tmp_path, instance, "127.0.0.2", port) as (io, _log):
        result = await readiness(io, port)  # listed by the kernel, but a connect to 127.0.0.1 is refused
    assert not result.ok and "connection refused" in result.detail, result


async def test_an_ipv6_only_listener_is_not_ready_on_127_0_0_1(tmp_path: Path, instance: str) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = free_port()
    async with service(tmp_path, instance, "::1", port) as (io, _log):
        result = await readiness(io, port)
    assert not result.ok and "connection refused" in result.detail, result


async def test_when_the_main_process_already_exited_readiness_connects(tmp_path: Path, instance: str) -> None:
    port = free_port()
    async with service(tmp_path, instance, "127.0.0.1", port, detach=True) as (io, log):
        result = await readiness(io, port)
        assert result.ok, result
        assert await accepted_after_a_marker_connect(log, port) == 2  # the readiness connect, then ours


async def test_a_sighting_answers_once_and_only_while_fresh() -> None:
    watcher = PortWatcher()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with anyio.fail_after(10):
            await watcher.wait_listening(port)  # lazy mode: the waiter's own read
        assert watcher.seen_on_loopback(port, max_age=0.0) is None  # too old: not taken, and used up
        with anyio.fail_after(10):
            await watcher.wait_listening(port)
        took = watcher.seen_on_loopback(port)
        assert took is not None and took >= 0.0
        assert watcher.seen_on_loopback(port) is None
