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


class PortSweep:
    """Liveness of every plain-port service from one read of the listening sockets.

    A TCP connect to a listening port is completed by the kernel whether or not the
    program calls accept(), so "the port is in the kernel's listening table" answers
    the same question as a connect probe, for all services at once and without a
    connection per service. Services are swept together on one beat (the shortest
    probe_interval among them), so idle cost is one wake-up and one read per beat,
    however many services there are.
    """

    def __init__(self, read: Callable[[], set[int]]) -> None:
        self._read = read
        self._members: dict[SweptService, float] = {}  # service -> next due time
        self._wake = anyio.Event()

    def add(self, service: SweptService) -> None:
        self._members[service] = anyio.current_time() + max(0.05, service.spec.probe_interval)
        self._wake.set()

    def discard(self, service: SweptService) -> None:
        self._members.pop(service, None)

    async def run(self) -> None:
        while True:
            if not self._members:
                self._wake = anyio.Event()
                await self._wake.wait()
            beat = min(max(0.05, r.spec.probe_interval) for r in self._members)
            await anyio.sleep(beat)
            now = anyio.current_time()
            due = [r for r, t in self._members.items() if t <= now + beat / 2]
            if not due:
                continue
            started = time.perf_counter()
            listening = self._read()
            latency = time.perf_counter() - started
            for service in due:
                if service in self._members:
                    self._members[service] = now + max(0.05, service.spec.probe_interval)
                    service.port_swept(service.spec.port in listening, latency)

