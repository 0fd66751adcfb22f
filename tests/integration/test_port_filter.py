"""The kernel-filtered read of the listening sockets: the same answer as the whole table,
for the ports asked about, against real listeners (IPv4 and IPv6)."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import anyio
import pytest

from supervisord_lite.runtime import portfilter
from supervisord_lite.runtime.probes import ListeningPorts, PortWatcher


@pytest.fixture
def listeners() -> Iterator[list[int]]:
    socks = []
    try:
        for _ in range(40):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            socks.append(s)
        if socket.has_ipv6:
            try:
                s6 = socket.socket(socket.AF_INET6)
                s6.bind(("::1", 0))
                s6.listen()
                socks.append(s6)
            except OSError:
                pass  # no IPv6 on this machine
        yield [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _closed_ports(n: int) -> list[int]:
    """Ports nothing listens on (bound, never listened, released)."""
    out = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        out.append(s.getsockname()[1])
        s.close()
    return out


def test_a_filtered_read_answers_like_the_whole_table(listeners: list[int]) -> None:
    reader = ListeningPorts()
    rng = random.Random(7)
    try:
        for size in (1, 2, 3, 7, 16, 33, portfilter.WORTH_FILTERING, portfilter.WORTH_FILTERING + 5):
            asked = rng.sample(listeners, min(size, len(listeners))) + _closed_ports(size)
            got = reader.read_among(asked)
            assert got == reader.read() & set(asked), size
            if reader.netlink:  # the kernel itself sends exactly those (not more, filtered after)
                assert reader._read_netlink(portfilter.attribute(asked)) == reader.read() & set(asked), size
            assert set(listeners) & set(asked) <= got
        assert reader.read_among([]) == set()
        assert reader.filtering or not reader.netlink  # the kernel took the program
    finally:
        reader.close()


def test_a_port_filter_program_is_a_binary_search_the_kernel_accepts() -> None:
    assert len(portfilter.program(range(1000, 1000 + portfilter.MAX_PORTS))) <= portfilter.MAX_PROGRAM
    with pytest.raises(ValueError):
        portfilter.program([])
    with pytest.raises(ValueError):
        portfilter.program(range(1, portfilter.MAX_PORTS + 2))


def test_the_watcher_notices_a_port_opening_among_many_listeners(listeners: list[int]) -> None:
    async def body() -> None:
        watcher = PortWatcher()
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run)
            with anyio.fail_after(10):  # did not hang: the real lag is milliseconds
                async with anyio.create_task_group() as waiting:
                    waiting.start_soon(watcher.wait_listening, port)
                    await anyio.sleep(0.02)
                    server.listen()
                await watcher.wait_listening(listeners[0])  # already listening: returns at the next tick
            server.close()
            with anyio.fail_after(10):
                await watcher.wait_closed(port)
            tg.cancel_scope.cancel()

    anyio.run(body)
