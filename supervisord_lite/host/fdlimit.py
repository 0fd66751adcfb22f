"""The daemon's open-file limit, sized for the services it runs.

Each running service holds three descriptors in the daemon: its log file, the pipe its
output comes through and the pidfd that reports its exit. The usual soft limit of 1024
(a login shell's, and systemd's default for a unit) would stop a platform at about 300
services with "Too many open files". So the daemon raises its soft limit as far as its
manifest needs, never above the hard limit, as supervisord's ``minfds`` does; the
services inherit the raised soft limit, as supervisord's do.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

__all__ = ["DAEMON_OWN", "DESCRIPTORS_PER_SERVICE", "RESERVE", "FileLimit", "descriptors_needed", "fit_open_file_limit", "soft_limit"]

#: a log file, an output pipe and a pidfd per running service
DESCRIPTORS_PER_SERVICE = 3
#: room asked for the daemon's own: control connections, status-page and metrics
#: clients, the state directory, its log, probes in flight, readiness connects
RESERVE = 256
#: what the daemon holds besides its services when nobody talks to it (about 12-30)
DAEMON_OWN = 32


@dataclass(frozen=True)
class FileLimit:
    """What ``fit_open_file_limit`` found and did."""

    before: int  # the soft limit found
    soft: int  # the soft limit now
    hard: int
    needed: int  # asked for: the services and RESERVE
    minimum: int  # without which some services cannot run: the services and DAEMON_OWN

    @property
    def enough(self) -> bool:
        return self.soft >= self.minimum


def descriptors_needed(services: int) -> int:
    return services * DESCRIPTORS_PER_SERVICE + RESERVE


def soft_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


def fit_open_file_limit(services: int) -> FileLimit:
    """Raise the soft RLIMIT_NOFILE to what ``services`` need (up to the hard limit);
    never lower it. Unlimited counts as enough."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = descriptors_needed(services)
    minimum = services * DESCRIPTORS_PER_SERVICE + DAEMON_OWN
    if soft == resource.RLIM_INFINITY:
        return FileLimit(soft, soft, hard, needed, minimum)
    before = soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a hard limit lowered meanwhile, or a sandbox that refuses
            pass
    return FileLimit(before, soft, hard, needed, minimum)
