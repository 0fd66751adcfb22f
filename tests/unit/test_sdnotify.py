"""systemd notify messages, received on a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisord_lite.core.systemdenv import SYSTEMD_VARIABLES
from supervisord_lite.daemon import sdnotify


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A socket standing in for systemd's, named by $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_watchdog_stopping(receiver: socket.socket) -> None:
    assert sdnotify.ready("3 services ready")
    assert receive(receiver) == ["READY=1", "STATUS=3 services ready"]
    assert sdnotify.status("reloading svc.toml")
    assert receive(receiver) == ["STATUS=reloading svc.toml"]
    assert sdnotify.watchdog()
    assert receive(receiver) == ["WATCHDOG=1"]
    assert sdnotify.stopping()
    assert receive(receiver) == ["STOPPING=1"]


def test_notify_sends_lines_as_one_datagram(receiver: socket.socket) -> None:
    assert sdnotify.notify("READY=1", "STATUS=ok", "MAINPID=1")
    assert receive(receiver) == ["READY=1", "STATUS=ok", "MAINPID=1"]


def test_reloading_carries_a_monotonic_timestamp(receiver: socket.socket) -> None:
    assert sdnotify.reloading()
    first, second = receive(receiver)
    assert first == "RELOADING=1"
    key, _, usec = second.partition("=")
    assert key == "MONOTONIC_USEC" and int(usec) > 0


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"svc-test-{os.getpid()}-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_no_socket_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.watchdog() is False


def test_a_socket_nobody_listens_on_does_not_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.notify("READY=1") is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # inherited from a parent: not ours
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "-5", "soon", ""):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert sdnotify.watchdog_interval() is None, bad


def test_every_variable_read_here_is_kept_from_the_services() -> None:
    """What sdnotify reads is the daemon's unit's; services must not inherit it."""
    source = Path(sdnotify.__file__).read_text()
    read = set(re.findall(r"os\.environ\.get\(\"([A-Z_]+)\"", source))
    assert read == {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}
    assert read <= set(SYSTEMD_VARIABLES)


def test_a_full_queue_drops_the_message_instead_of_blocking(receiver: socket.socket) -> None:
    """systemd may be slow to read; the daemon's event loop must never wait on it."""
    sent = 0
    for _ in range(10_000):  # far past any datagram queue length; a blocking send would hang here
        if not sdnotify.notify("WATCHDOG=1"):
            break
        sent += 1
    assert 0 < sent < 10_000, "the queue never filled, or nothing was sent"
    assert receive(receiver) == ["WATCHDOG=1"]  # what was queued still arrives
