"""Liveness of every plain-port service from one read of the kernel's listening sockets."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import anyio

from supervisord_lite.core.model import ServiceSpec


class SweptService(Protocol):
    """What the sweep needs of a service (a ``Runner``): its port and interval, and
    somewhere to report each result."""

    spec: ServiceSpec

    def port_swept(self, listening: bool, latency: float) -> None: ...

    def needs_each_sweep(self) -> bool:
        """Whether a "still listening" result would still change something for it
        (a restart backoff that has not been reset yet)."""
        ...


class SteadyObserver(Protocol):
    """Where the probe latencies of services that are quietly listening go (the
    metrics' histogram): one observation per sweep for a whole group, instead of one
    call per service."""

    def join_group(self, group: object, service: str, port: int) -> None: ...

    def leave_group(self, group: object, service: str, port: int) -> None: ...

    def observe_group(self, group: object, seconds: float) -> None: ...


class _Cohort:
    """The quietly listening services of one probe interval: swept together, and
    reported to only when their port is gone."""

    __slots__ = ("interval", "due", "by_port", "latency", "sweeps")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.due = 0.0
        self.by_port: dict[int, list[SweptService]] = {}
        self.latency = 0.0  # of its last sweep
        self.sweeps = 0


def _interval(service: SweptService) -> float:
    return max(0.05, service.spec.probe_interval)


class PortSweep:
    """Liveness of every plain-port service from one read of the listening sockets.

    A TCP connect to a listening port is completed by the kernel whether or not the
    program calls accept(), so "the port is in the kernel's listening table" answers
    the same question as a connect probe, for all services at once and without a
    connection per service. Services are swept together on one beat (the shortest
    probe_interval among them), so idle cost is one wake-up and one read per beat,
    however many services there are.

    The steady state costs no per-service Python work either. A service is told each
    result (``port_swept``) while it is new, failing, recovering or still needs each
    result (``needs_each_sweep``); once a result changes nothing for it, it joins the
    quiet cohort of its interval. A cohort's sweep is one set difference of its ports
    against the listening table: only a service whose port is gone is told (the same
    result, on the same schedule, so the same failure threshold applies), and leaves
    the cohort until it reports listening again. The probe latency of the quiet
    ones goes to the ``SteadyObserver`` once per sweep for the whole cohort, and
    ``steady_latency`` gives it to a snapshot that asks.
    """

    def __init__(self, read: Callable[[], set[int]], observer: SteadyObserver | None = None) -> None:
        self._read = read
        self.observer = observer
        self._pending: dict[SweptService, float] = {}  # service -> next due time; told each result
        self._cohorts: dict[float, _Cohort] = {}  # probe interval -> its quiet services
        self._quiet: dict[SweptService, tuple[_Cohort, int]] = {}  # with the cohort's sweeps when it joined
        self._quiet_by_name: dict[str, SweptService] = {}
        self._wake = anyio.Event()

    def add(self, service: SweptService) -> None:
        self.discard(service)
        self._pending[service] = anyio.current_time() + _interval(service)
        self._wake.set()

    def discard(self, service: SweptService) -> None:
        self._pending.pop(service, None)
        if service in self._quiet:
            self._leave(service)

    def steady_latency(self, name: str) -> float | None:
        """The latency of the last sweep that found service ``name`` still listening,
        when it is one of the quiet ones (None otherwise: its own snapshot is current)."""
        # called from the metrics server's threads too: each lookup is one atomic get
        service = self._quiet_by_name.get(name)
        quiet = self._quiet.get(service) if service is not None else None
        if quiet is None:
            return None
        cohort, joined = quiet
        return cohort.latency if cohort.sweeps > joined else None  # else its own last report is the last probe

    def observe_with(self, observer: SteadyObserver | None) -> None:
        """Send the quiet services' probe latencies to ``observer`` from now on."""
        for service in list(self._quiet):
            self._leave(service)
            self._pending[service] = anyio.current_time()  # told its next result, then quiet again
        self.observer = observer

    @property
    def members(self) -> int:
        return len(self._pending) + len(self._quiet)

    async def run(self) -> None:
        while True:
            if not self._pending and not self._quiet:
                self._wake = anyio.Event()
                await self._wake.wait()
            beat = min(
                [_interval(s) for s in self._pending] + [c.interval for c in self._cohorts.values() if c.by_port]
            )
            await anyio.sleep(beat)
            self.sweep(anyio.current_time(), beat)

    def sweep(self, now: float, beat: float) -> None:
        """One beat: read the table if anything is due, and tell whoever needs telling."""
        horizon = now + beat / 2
        due = [s for s, t in self._pending.items() if t <= horizon]
        cohorts = [c for c in self._cohorts.values() if c.by_port and c.due <= horizon]
        if not due and not cohorts:
            return
        started = time.perf_counter()
        listening = self._read()
        latency = time.perf_counter() - started
        for cohort in cohorts:
            self._sweep_cohort(cohort, listening, latency, now)
        for service in due:
            if service not in self._pending:
                continue  # discarded by an earlier report of this beat
            up = service.spec.port in listening
            self._pending[service] = now + _interval(service)
            service.port_swept(up, latency)
            if up and service in self._pending and not service.needs_each_sweep():
                self._join(service, now)

    def _sweep_cohort(self, cohort: _Cohort, listening: set[int], latency: float, now: float) -> None:
        cohort.due = now + cohort.interval
        gone = cohort.by_port.keys() - listening
        for port in gone:
            for service in list(cohort.by_port.get(port, ())):
                self._leave(service)
                self._pending[service] = cohort.due  # failing: told each result until it listens again
                service.port_swept(False, latency)
        if cohort.by_port:
            cohort.latency = latency
            cohort.sweeps += 1
            if self.observer is not None:
                self.observer.observe_group(cohort, latency)

    def _join(self, service: SweptService, now: float) -> None:
        del self._pending[service]
        interval = _interval(service)
        cohort = self._cohorts.get(interval)
        if cohort is None:
            cohort = self._cohorts[interval] = _Cohort(interval)
        if not cohort.by_port:
            cohort.due = now + interval
        port = service.spec.port
        assert port is not None
        cohort.by_port.setdefault(port, []).append(service)
        self._quiet[service] = (cohort, cohort.sweeps)
        self._quiet_by_name[service.spec.name] = service
        if self.observer is not None:
            self.observer.join_group(cohort, service.spec.name, port)

    def _leave(self, service: SweptService) -> None:
        cohort, _ = self._quiet.pop(service)
        port = service.spec.port
        assert port is not None
        members = cohort.by_port[port]
        members.remove(service)
        if not members:
            del cohort.by_port[port]
        if self._quiet_by_name.get(service.spec.name) is service:
            del self._quiet_by_name[service.spec.name]
        if self.observer is not None:
            self.observer.leave_group(cohort, service.spec.name, port)
