"""A kernel-side filter for the listening-socket dump: only the ports someone waits for.

During a start burst hundreds of services wait for their ports at once while a
thousand others already listen. Reading the whole socket table at every tick then
costs Python work per listening socket; with this filter the kernel sends only the
sockets on the ports asked about, so a tick costs about as much for 1000 listeners
as for 10.

The filter is inet_diag bytecode (``INET_DIAG_REQ_BYTECODE``): a sorted binary
search over the ports, about ten comparisons per socket for a thousand ports.
The kernel accepts a program only when every jump target lies on the chain of
"yes" steps from its start (``inet_diag_bc_audit``), so the program is laid out
in one straight line: each comparison's "yes" is the next instruction, its "no"
a forward jump, and a ``JMP`` (whose "yes" is the next instruction for the audit,
and which always takes its "no" when run) ends each leaf with a jump to the end.
"""

from __future__ import annotations

import struct
from collections.abc import Collection

#: inet_diag_bc_op: code, yes (u8 offset), no (u16 offset); a port comparison is followed by
#: a second op whose ``no`` field holds the port
_OP = struct.Struct("=BBH")
_BC_JMP = 1
_BC_S_GE = 2
_BC_S_LE = 3
_PORT_OP = 2 * _OP.size  # the comparison and its operand
_JMP_OP = _OP.size
#: the request attribute that carries the program
INET_DIAG_REQ_BYTECODE = 1
#: a program must fit a netlink attribute (its length is 16 bits) and every offset a u16
MAX_PROGRAM = 60_000
#: beyond this many ports a filtered read is not attempted (the program would not fit)
MAX_PORTS = MAX_PROGRAM // (3 * _PORT_OP + _JMP_OP)  # a leaf (two comparisons, a jump) and a branch
#: the kernel checks a program in time quadratic in its length (every jump target is looked
#: up along the chain): above about 64 ports, reading the whole table is cheaper
WORTH_FILTERING = 64

_ACCEPT = -1
_REJECT = -2


def program(ports: Collection[int]) -> bytes:
    """The bytecode that accepts exactly the sockets whose local port is in ``ports``.

    :raises ValueError: no ports, or more than ``MAX_PORTS``
    """
    wanted = sorted({int(p) for p in ports})
    if not wanted or len(wanted) > MAX_PORTS:
        raise ValueError(f"a port filter takes 1 to {MAX_PORTS} ports, got {len(wanted)}")
    ops: list[tuple[int, int, int]] = []  # (code, port or 0, "no" target: label index, _ACCEPT or _REJECT)
    labels: list[int] = []  # label index -> op index

    def emit(lo: int, hi: int) -> None:
        if hi - lo == 1:
            port = wanted[lo]
            ops.append((_BC_S_GE, port, _REJECT))
            ops.append((_BC_S_LE, port, _REJECT))
            ops.append((_BC_JMP, 0, _ACCEPT))
            return
        mid = (lo + hi) // 2
        right = len(labels)
        labels.append(-1)
        ops.append((_BC_S_LE, wanted[mid - 1], right))  # yes: the lower half (next); no: the upper half
        emit(lo, mid)
        labels[right] = len(ops)
        emit(mid, hi)

    emit(0, len(wanted))
    offsets = []
    at = 0
    for code, _port, _target in ops:
        offsets.append(at)
        at += _JMP_OP if code == _BC_JMP else _PORT_OP
    total = at
    out = bytearray()
    for (code, port, target), offset in zip(ops, offsets, strict=True):
        if target == _ACCEPT:
            no = total - offset  # lands exactly on the end: accepted
        elif target == _REJECT:
            no = total - offset + 4  # past the end: rejected
        else:
            no = offsets[labels[target]] - offset
        if code == _BC_JMP:
            out += _OP.pack(code, _JMP_OP, no)
        else:
            out += _OP.pack(code, _PORT_OP, no) + _OP.pack(0, 0, port)
    return bytes(out)


def attribute(ports: Collection[int]) -> bytes:
    """The netlink attribute carrying ``program(ports)``, to append to an inet_diag request."""
    code = program(ports)
    return struct.pack("=HH", 4 + len(code), INET_DIAG_REQ_BYTECODE) + code
