"""Why a listening socket's process cannot be named, told truthfully for each viewer."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from supervisord_lite.host.portinfo import can_trace_others, hidden_reason, listening_sockets


def test_a_user_is_told_another_users_socket_needs_root() -> None:
    why = hidden_reason(socket_uid=0, euid=65534)
    assert why.startswith("the socket belongs to user root, and only root may see another user's processes")


def test_root_is_never_told_to_run_as_root() -> None:
    outside = hidden_reason(socket_uid=0, euid=0, privileged=True)
    assert "run" not in outside and "outside this PID namespace" in outside
    # the same user's socket hidden from its user: also another namespace, not a missing privilege
    assert "outside this PID namespace" in hidden_reason(socket_uid=1000, euid=1000)


def test_root_without_cap_sys_ptrace_is_told_so() -> None:
    why = hidden_reason(socket_uid=65534, euid=0, privileged=False)
    assert "this root lacks CAP_SYS_PTRACE" in why and "run as root" not in why


def test_cap_sys_ptrace_is_read_from_the_effective_set(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000001fffeffffff\n")
    assert can_trace_others(str(status))
    status.write_text("Name:\tx\nCapEff:\t00000000a80425fb\n")  # docker's default set: no bit 19
    assert not can_trace_others(str(status))


def test_the_socket_owner_comes_from_the_kernel_table() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        uids: dict[int, int] = {}
        assert port in listening_sockets(uids)
        assert uids[port] == os.geteuid()
