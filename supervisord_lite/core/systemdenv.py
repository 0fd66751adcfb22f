"""The variables systemd hands the daemon's unit, which the services must not inherit.

Under ``Type=notify`` (and socket activation) systemd sets these for the daemon alone.
The daemon reads them itself (``daemon.sdnotify``); a service that speaks the protocol
too (PostgreSQL built with systemd support does) would otherwise notify systemd about
*our* unit, or claim sockets that were passed to us.
"""

from __future__ import annotations

__all__ = ["SYSTEMD_VARIABLES"]

SYSTEMD_VARIABLES: tuple[str, ...] = (
    "NOTIFY_SOCKET",  # sd_notify(3)
    "WATCHDOG_USEC",  # sd_watchdog_enabled(3)
    "WATCHDOG_PID",
    "LISTEN_FDS",  # sd_listen_fds(3)
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)
