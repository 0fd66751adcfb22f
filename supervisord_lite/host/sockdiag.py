"""Listening TCP sockets, straight from the kernel's sock_diag netlink interface.

Why not /proc/net/tcp: the kernel builds that text by walking its whole table of
connections, listening or not, whose size follows the machine's memory. On a 24 GiB
machine one read of /proc/net/tcp6 costs ~4.5 ms with no IPv6 socket at all. A
sock_diag dump that asks for the LISTEN state walks only the listening sockets
(~20 microseconds here), and the kernel can filter it by port (``runtime.portfilter``).

``Dump`` keeps one netlink socket open: use one per thread (it is not locked).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_LISTEN = 10
_NLMSG_HDR = struct.Struct("=IHHII")
_DIAG_REQ = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states; then a 48-byte inet_diag_sockid

# Where the fields of a socket lie in its message: the netlink header, then inet_diag_msg
# (family, state, timer, retrans; the sockid: source port, destination port, source and
# destination addresses of 16 bytes, interface, cookie; then expires, rqueue, wqueue, uid, inode).
MSG = _NLMSG_HDR.size
PORT_AT = MSG + 4
ADDRESS_AT = MSG + 8
UID_AT = MSG + 64
INODE_AT = MSG + 68
PORT = struct.Struct("!H")
_UID_INODE = struct.Struct("=II")

FAMILIES = (socket.AF_INET, socket.AF_INET6)

#: IPv4 local addresses a connect to 127.0.0.1 reaches: loopback itself, or every address
LOOPBACK_REACHING = (socket.inet_aton("127.0.0.1"), socket.inet_aton("0.0.0.0"))


def available() -> bool:
    return hasattr(socket, "AF_NETLINK")


class Dump:
    """Dumps of this machine's listening TCP sockets over one netlink socket.

    ``messages`` yields each socket's message as ``(data, offset)``; read its fields at
    ``offset + PORT_AT`` and so on (a reader that wants only the port builds nothing more).
    Raises OSError when the kernel refuses (no netlink, a seccomp filter, a bad filter)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._seq = 0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def messages(self, family: int, port_filter: bytes = b"") -> Iterator[tuple[bytes, int]]:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
        sock = self._sock
        self._seq += 1
        seq = self._seq
        body = _DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN) + bytes(48) + port_filter
        sock.send(_NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0) + body)
        while True:
            data, (sender, _groups) = sock.recvfrom(65536)
            if not data:
                raise OSError(errno.EPROTO, "netlink closed")
            if sender != 0:  # only the kernel answers a dump; nothing another process sent
                continue
            offset = 0
            while offset + _NLMSG_HDR.size <= len(data):
                length, kind, _flags, msg_seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
                if length < _NLMSG_HDR.size:
                    raise OSError(errno.EPROTO, "malformed netlink message")
                if msg_seq == seq:
                    if kind == _NLMSG_DONE:
                        return
                    if kind == _NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, offset + _NLMSG_HDR.size)
                        raise OSError(-code, os.strerror(-code) if code else "netlink error")
                    if length >= INODE_AT + 4:  # a whole inet_diag_msg
                        yield data, offset
                offset += (length + 3) & ~3


class ListeningSocket(NamedTuple):
    port: int
    inode: int
    uid: int
    address: str  # the local address as people write it: "127.0.0.1", "::", "::1"


def sockets() -> list[ListeningSocket]:
    """Every listening TCP socket, IPv4 ones first. OSError when netlink is refused."""
    found: list[ListeningSocket] = []
    dump = Dump()
    try:
        for family in FAMILIES:
            width = 4 if family == socket.AF_INET else 16
            for data, offset in dump.messages(family):
                (port,) = PORT.unpack_from(data, offset + PORT_AT)
                uid, inode = _UID_INODE.unpack_from(data, offset + UID_AT)
                start = offset + ADDRESS_AT
                found.append(ListeningSocket(port, inode, uid, socket.inet_ntop(family, data[start : start + width])))
    finally:
        dump.close()
    return found
