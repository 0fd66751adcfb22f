"""The states a service can be in, and the one table of transitions between them.

Every state change goes through ``transition``; the names are part of the metrics
contract (``svc_service_state{state=...}``). Imports nothing from the package.
"""

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


class Event(enum.StrEnum):
    """What happens to a service; the runner feeds these to ``transition``."""

    START = "start"  # asked to run (svc up / restart / retry out of failed)
    DEPS_READY = "deps_ready"  # every prerequisite is ready
    PORT_TAKEN = "port_taken"  # a foreign process holds our port
    PORT_FREE = "port_free"  # the foreign process let go
    SPAWNED = "spawned"
    READY = "ready"  # readiness probe passed
    DONE = "done"  # exited 0 and is not to be restarted (oneshot success)
    PROBE_FAILED = "probe_failed"  # liveness failed unhealthy_threshold times
    CRASHED = "crashed"  # exited (or was found unhealthy) and will be restarted
    BACKOFF_OVER = "backoff_over"
    GIVE_UP = "give_up"  # spawn error, ready timeout, start limit, exit with no restart
    STOP = "stop"  # asked to stop (svc down / shutdown / reload)
    STOPPED = "stopped"  # every process of the service is gone
    DISABLE = "disable"  # the manifest says disabled
    DEPRECATE = "deprecate"  # the manifest says deprecated


S = ServiceState
_ANY_LIVE = (S.STARTING, S.READY, S.UNHEALTHY)

#: (state, event) -> next state. Anything not listed is a bug in the runner.
TRANSITIONS: dict[tuple[ServiceState, Event], ServiceState] = {
    **{(s, Event.START): S.WAITING for s in (S.STOPPED, S.FAILED, S.EXITED, S.WAITING, S.CONFLICT, S.BACKOFF)},
    (S.WAITING, Event.DEPS_READY): S.STARTING,
    (S.WAITING, Event.PORT_TAKEN): S.CONFLICT,
    (S.BACKOFF, Event.PORT_TAKEN): S.CONFLICT,
    (S.CONFLICT, Event.PORT_FREE): S.WAITING,
    (S.WAITING, Event.GIVE_UP): S.FAILED,  # e.g. the spawn itself failed
    (S.STARTING, Event.SPAWNED): S.STARTING,
    (S.STARTING, Event.READY): S.READY,
    (S.STARTING, Event.DONE): S.EXITED,
    (S.READY, Event.DONE): S.EXITED,
    (S.UNHEALTHY, Event.DONE): S.EXITED,  # it exited 0 while its probes were failing
    (S.READY, Event.PROBE_FAILED): S.UNHEALTHY,
    **{(s, Event.CRASHED): S.BACKOFF for s in _ANY_LIVE},
    **{(s, Event.GIVE_UP): S.FAILED for s in (*_ANY_LIVE, S.BACKOFF)},
    (S.BACKOFF, Event.BACKOFF_OVER): S.WAITING,
    **{(s, Event.STOP): S.STOPPING for s in S if s not in (S.DISABLED, S.DEPRECATED)},
    (S.STOPPING, Event.STOPPED): S.STOPPED,
    **{(s, Event.DISABLE): S.DISABLED for s in (S.STOPPED, S.STOPPING, S.DISABLED, S.DEPRECATED)},
    **{(s, Event.DEPRECATE): S.DEPRECATED for s in (S.STOPPED, S.STOPPING, S.DISABLED, S.DEPRECATED)},
    (S.DISABLED, Event.STOPPED): S.DISABLED,
    (S.DEPRECATED, Event.STOPPED): S.DEPRECATED,
}


class InvalidTransition(RuntimeError):
    pass


def transition(state: ServiceState, event: Event) -> ServiceState:
    """The next state, or InvalidTransition when ``event`` cannot happen in ``state``."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"event {event.value!r} is not valid in state {state.value!r}") from None
