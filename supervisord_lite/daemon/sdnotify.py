"""systemd's notify protocol (sd_notify(3)) without a dependency.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``: a datagram socket that
takes newline-separated ``KEY=value`` lines (``READY=1``, ``STATUS=...``,
``WATCHDOG=1``, ``STOPPING=1``, ``RELOADING=1``). A path starting with ``@`` is in
the abstract namespace. Outside systemd every call is a no-op that returns False,
so the daemon calls these unconditionally.

These variables are the daemon's alone: ``service_environment`` keeps every name in
``core.systemdenv.SYSTEMD_VARIABLES`` from the services, so one that speaks the
protocol itself (PostgreSQL built with systemd support does) cannot notify systemd
about *our* unit. This module reads them from the daemon's own ``os.environ``, which
nothing strips.
"""

from __future__ import annotations

import os
import socket
import time


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def notify(*lines: str) -> bool:
    """Send ``lines`` as one message to ``$NOTIFY_SOCKET``; True when it was sent.

    False when not run by systemd (no socket) or when sending failed: a lost
    status line must never take the daemon down.
    """
    target = os.environ.get("NOTIFY_SOCKET", "")
    if not target or not lines:
        return False
    if not target.startswith(("/", "@")):
        return False  # vsock and other transports are not for a developer daemon
    message = "\n".join(lines).encode()
    try:
        # non-blocking: when the receiver's queue is full (Linux queues only
        # net.unix.max_dgram_qlen datagrams, 10 by default) a blocking send would stall
        # the daemon's event loop; a dropped status line or watchdog ping is harmless,
        # the next one follows
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
            sock.sendto(message, _address(target))
    except OSError:  # includes BlockingIOError (queue full)
        return False
    return True


def ready(status: str = "") -> bool:
    """``READY=1``: the daemon serves requests (and an optional status line)."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def status(text: str) -> bool:
    """``STATUS=...``: a line ``systemctl status`` shows."""
    return notify(f"STATUS={text}")


def stopping(status: str = "") -> bool:
    """``STOPPING=1``: shutdown has begun."""
    return notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def reloading() -> bool:
    """``RELOADING=1`` with the monotonic timestamp newer systemd expects; send ``ready()`` after."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def watchdog() -> bool:
    """``WATCHDOG=1``: the keep-alive ping."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds from ``$WATCHDOG_USEC``, or None when off.

    Ping with ``watchdog()`` at least every half of it, as sd_watchdog_enabled(3)
    advises. None too when ``$WATCHDOG_PID`` names another process: the variable
    was inherited, the watchdog is not ours.
    """
    raw = os.environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000
