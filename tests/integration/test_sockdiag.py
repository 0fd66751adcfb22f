"""Listening sockets from sock_diag: the same facts as /proc/net/tcp{,6}, and the fallback when netlink is refused."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervisord_lite.host import portinfo, sockdiag
from tests.conftest import wait_until

pytestmark = pytest.mark.skipif(not sockdiag.available(), reason="no netlink on this system")


def _proc_tables() -> list[sockdiag.ListeningSocket]:
    """The text tables' answer, read the way portinfo reads them without netlink."""
    found: list[sockdiag.ListeningSocket] = []
    for table in portinfo._PROC_TABLES:
        try:
            portinfo._parse_table(table.read_text(), found)
        except OSError:
            continue
    return found


def _by_port(listeners: list[sockdiag.ListeningSocket]) -> dict[int, set[tuple[int, int, str]]]:
    by_port: dict[int, set[tuple[int, int, str]]] = {}
    for listener in listeners:
        by_port.setdefault(listener.port, set()).add((listener.inode, listener.uid, listener.address))
    return by_port


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _apart(make: Callable[[], socket.socket], ports: set[int]) -> socket.socket:
    """A socket from ``make`` on none of ``ports``: each family numbers its ports on its
    own, so the OS may hand ::1 the port 127.0.0.1 holds, and the reverse. Those tried are
    held open while it asks again, so it hands out another."""
    tried: list[socket.socket] = []
    try:
        while (made := make()).getsockname()[1] in ports:
            tried.append(made)
        return made
    finally:
        for extra in tried:
            extra.close()


def _bound() -> socket.socket:
    bound = socket.socket()
    bound.bind(("127.0.0.1", 0))
    return bound


@pytest.fixture
def sockets() -> Iterator[dict[str, socket.socket]]:
    """A listener on 127.0.0.1, one on ::1 (where the machine has it), a bound socket that
    does not listen, and a connected pair: only the two listeners are listening sockets,
    and each of the three has a port of its own."""
    made: dict[str, socket.socket] = {}
    try:
        made["v4"] = socket.create_server(("127.0.0.1", 0))
        if _ipv6_loopback():
            made["v6"] = _apart(lambda: socket.create_server(("::1", 0), family=socket.AF_INET6), {made["v4"].getsockname()[1]})
        made["bound"] = _apart(_bound, {made[key].getsockname()[1] for key in ("v4", "v6") if key in made})
        made["client"] = socket.create_connection(made["v4"].getsockname()[:2])
        made["accepted"], _ = made["v4"].accept()
        yield made
    finally:
        for s in made.values():
            s.close()


def test_the_dump_names_each_listener_with_its_inode_and_owner(sockets: dict[str, socket.socket]) -> None:
    found = _by_port(sockdiag.sockets())
    for key, address in (("v4", "127.0.0.1"), ("v6", "::1")):
        if key not in sockets:
            continue
        s = sockets[key]
        port = s.getsockname()[1]
        assert found[port] == {(os.fstat(s.fileno()).st_ino, os.geteuid(), address)}, key
    # by inode, not port: another family's listener may hold the same port number
    listening = {inode for entries in found.values() for inode, _uid, _address in entries}
    assert os.fstat(sockets["bound"].fileno()).st_ino not in listening  # bound, never listened
    assert os.fstat(sockets["client"].fileno()).st_ino not in listening  # a connection
    assert os.fstat(sockets["accepted"].fileno()).st_ino not in listening


def test_the_dump_agrees_with_the_text_tables(sockets: dict[str, socket.socket]) -> None:
    ours = {s.getsockname()[1] for key, s in sockets.items() if key in ("v4", "v6")}
    found = _by_port(sockdiag.sockets())
    text = _by_port(_proc_tables())
    for port in ours:
        assert found[port] == text[port]  # inode, owner and address, IPv4 and IPv6
    # the whole tables agree too, but other programs may open or close a listener between
    # the two reads: compare only ports that both reads saw, and ours must be in both
    for port in found.keys() & text.keys():
        assert found[port] == text[port] or port not in ours


def test_portinfo_falls_back_to_the_text_tables_when_netlink_is_refused(
    sockets: dict[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused() -> list[sockdiag.ListeningSocket]:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(sockdiag, "sockets", refused)
    port = sockets["v4"].getsockname()[1]
    uids: dict[int, int] = {}
    found = portinfo.listening_sockets(uids)
    assert found[port] == {os.fstat(sockets["v4"].fileno()).st_ino}
    assert uids[port] == os.geteuid()
    assert port in portinfo.listening_ports()
    for key, address in (("v4", "127.0.0.1"), ("v6", "::1")):
        if key in sockets:
            listener = portinfo.listener_on(sockets[key].getsockname()[1])
            assert listener is not None and (listener.pid, listener.address) == (os.getpid(), address), key


def test_a_dump_socket_serves_many_dumps_and_reopens_after_close(sockets: dict[str, socket.socket]) -> None:
    port = sockets["v4"].getsockname()[1]
    dump = sockdiag.Dump()
    try:
        for _ in range(3):
            ports = {sockdiag.PORT.unpack_from(data, offset + sockdiag.PORT_AT)[0]
                     for family in sockdiag.FAMILIES for data, offset in dump.messages(family)}
            assert port in ports
        dump.close()
        assert any(sockdiag.PORT.unpack_from(data, offset + sockdiag.PORT_AT)[0] == port
                   for data, offset in dump.messages(socket.AF_INET))
    finally:
        dump.close()


def test_each_socket_comes_with_its_local_address(sockets: dict[str, socket.socket]) -> None:
    seen = {(s.port, s.inode): s for s in sockdiag.sockets()}
    for key, address in (("v4", "127.0.0.1"), ("v6", "::1")):
        if key not in sockets:
            continue
        own = sockets[key]
        found = seen[(own.getsockname()[1], os.fstat(own.fileno()).st_ino)]
        assert (found.address, found.uid) == (address, os.geteuid()), key


def test_the_listener_on_a_port_is_named_with_its_process_and_address(sockets: dict[str, socket.socket]) -> None:
    for key, address in (("v4", "127.0.0.1"), ("v6", "::1")):
        if key not in sockets:
            continue
        listener = portinfo.listener_on(sockets[key].getsockname()[1])
        assert listener is not None
        assert (listener.pid, listener.address, listener.socket_uid) == (os.getpid(), address, os.geteuid()), key
    assert portinfo.listener_on(sockets["bound"].getsockname()[1]) is None  # bound, not listening


def test_the_ports_a_process_tree_listens_on(tmp_path: Path, sockets: dict[str, socket.socket]) -> None:
    """A parent that listens on one port and a child of it on another: both are the
    tree's, and a port of another process (this test's) is not."""
    ready = tmp_path / "ports"
    child_code = (
        "import socket, sys, time\n"
        "s = socket.create_server(('127.0.0.1', 0))\n"
        "open(sys.argv[1], 'a').write(f'{s.getsockname()[1]}\\n')\n"
        "time.sleep(60)\n"
    )
    parent_code = (
        "import socket, subprocess, sys, time\n"
        "s = socket.create_server(('127.0.0.1', 0))\n"
        "open(sys.argv[1], 'a').write(f'{s.getsockname()[1]}\\n')\n"
        f"subprocess.Popen([sys.executable, '-c', {child_code!r}, sys.argv[1]])\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code, str(ready)], start_new_session=True)
    try:
        wait_until(lambda: ready.exists() and len(ready.read_text().split()) == 2, timeout=30, what="both to listen")
        ports = {int(p) for p in ready.read_text().split()}
        assert portinfo.ports_listened_by(parent.pid) == ports
        assert sockets["v4"].getsockname()[1] not in portinfo.ports_listened_by(parent.pid)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert portinfo.ports_listened_by(parent.pid) == set()  # gone


def test_a_listener_that_pads_its_title_is_named_without_the_padding(tmp_path: Path) -> None:
    """redis-server rewrites its command line as 'redis-server *:PORT' padded with spaces:
    a conflict's message must not end in a run of blanks."""
    ready = tmp_path / "port"
    code = (
        "import socket, sys, time\n"
        "s = socket.create_server(('127.0.0.1', 0))\n"
        "open(sys.argv[1], 'w').write(str(s.getsockname()[1]))\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(ready), "padded", "", "  "], start_new_session=True)
    try:
        wait_until(lambda: ready.exists() and ready.read_text(), timeout=30, what="the child to listen")
        listener = portinfo.listener_on(int(ready.read_text()))
        assert listener is not None and listener.pid == child.pid
        assert listener.cmdline.endswith("padded"), repr(listener.cmdline)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="only a process with CAP_NET_ADMIN may send to a sock_diag socket")
def test_a_datagram_another_process_sends_to_the_dump_socket_is_not_believed() -> None:
    """Only the kernel answers a dump. A privileged process can still queue a forged
    answer (the next sequence number, a socket on port 1) on the dump's netlink socket
    before the kernel's: it must not show up as a listener."""
    dump = sockdiag.Dump()
    dump._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4)  # NETLINK_SOCK_DIAG
    dump._sock.bind((0, 0))
    portid = dump._sock.getsockname()[0]
    body = struct.pack("=BBBB", socket.AF_INET, 10, 0, 0) + struct.pack("!HH", 1, 0) + bytes(44) + struct.pack("=5I", 0, 0, 0, 0, 424242)
    forged = struct.pack("=IHHII", 16 + len(body), 20, 2, 1, portid) + body  # SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, seq 1
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4) as forger:
        forger.sendto(forged, (portid, 0))
    try:
        ports = {sockdiag.PORT.unpack_from(data, offset + sockdiag.PORT_AT)[0]
                 for data, offset in dump.messages(socket.AF_INET)}
    finally:
        dump.close()
    assert 1 not in ports
