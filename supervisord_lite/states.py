"""Service states (spec section 3). Imports nothing from the package."""

from __future__ import annotations

import enum


class ServiceState(enum.StrEnum):
    STOPPED = "stopped"
    WAITING = "waiting"  # for dependencies
    STARTING = "starting"  # spawned, not ready yet
    READY = "ready"
    UNHEALTHY = "unhealthy"  # liveness failing, restart coming
    BACKOFF = "backoff"  # waiting to restart
    STOPPING = "stopping"
    FAILED = "failed"  # start limit or ready timeout hit
    EXITED = "exited"  # ended with 0 and not restarted (oneshot done)
    CONFLICT = "conflict"  # port held by a process that is not ours
    DISABLED = "disabled"
    DEPRECATED = "deprecated"


#: States in which a process of ours may be alive.
RUNNING_STATES = frozenset(
    {ServiceState.STARTING, ServiceState.READY, ServiceState.UNHEALTHY, ServiceState.STOPPING}
)
#: States an `svc up` waits through; anything else is an outcome.
TRANSIENT_STATES = frozenset(
    {ServiceState.WAITING, ServiceState.STARTING, ServiceState.BACKOFF, ServiceState.UNHEALTHY}
)
#: Outcomes of an `svc up` that count as success.
GOOD_STATES = frozenset({ServiceState.READY, ServiceState.EXITED})
