"""Prometheus metrics of the supervisor.

Everything about services is read at scrape time from ONE immutable
``SupervisorSnapshot`` (``SupervisorCollector``), so a scrape never sees a
half-updated service and there is no second copy of the bookkeeping. The only
state kept here is the probe latency histogram (``ProbeStats``): a histogram needs
every observation, not just the last latency, so the supervisor feeds it with
``observe_probe`` after each probe, and the port sweep with one ``observe_group``
per sweep for all the services it found still listening.

Every metric lives on the registry of a ``Metrics`` object, never on
prometheus_client's global registry, so several daemons (or tests) can live in one
process. The daemon's own process metrics (``process_*``, ``python_*``) are
registered on the same registry.

Speed: 500 services make ~18,000 samples (12 state series and 16 histogram
samples per service). Through prometheus_client objects (``Histogram``,
``*MetricFamily``, ``generate_latest``) one scrape took ~120 ms. So the two big
collectors write the text format directly (~9 ms for 500 services), and their
``collect()`` (for anyone using the registry the usual way) parses that same text
back with prometheus_client's parser: one implementation, two interfaces.

prometheus_client itself (with what it pulls in: wsgiref, urllib.request, gzip,
email; ~4 MB resident and ~15 ms of imports) is loaded at the first scrape or the
first use of ``Metrics.registry``, not at the daemon's start: the text above needs
none of it, and a daemon nobody scrapes never loads it.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from supervisord_lite import __version__
from supervisord_lite.core.snapshot import SupervisorSnapshot
from supervisord_lite.core.states import ServiceState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

SnapshotSource = Callable[[], SupervisorSnapshot]

#: The Prometheus text exposition format served at /metrics.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Buckets for probes over loopback: a TCP connect takes ~0.1 ms, an HTTP
#: health endpoint a few ms, a slow ``exec`` probe up to its timeout.
PROBE_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: Every ``svc_*`` family of the snapshot, in exposition order: (name, type, help).
#: Names are part of the contract (the README lists them): dashboards and alerts use them.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("svc_info", "gauge", "The supervisor: its name, manifest and version."),
    ("svc_port_up", "gauge", "1 when the last probe of the service's port succeeded."),
    ("svc_port_conflict", "gauge", "1 when a process that is not ours holds the service's port."),
    ("svc_service_state", "gauge", "1 for the service's current state, 0 for the others."),
    ("svc_service_restarts_total", "counter", "Restarts of the service by this daemon process (never reset by an explicit restart)."),
    ("svc_memory_restarts_total", "counter", "Restarts because the process tree stayed above max_memory."),
    ("svc_service_start_time_seconds", "gauge", "Unix time of the service's last start."),
    ("svc_service_ready_duration_seconds", "gauge", "Spawn-to-ready time of the service's last start."),
    ("svc_process_resident_memory_bytes", "gauge", "Resident memory of the service's whole process tree."),
    ("svc_process_cpu_seconds_total", "counter", "CPU time of the service's whole process tree."),
    ("svc_manifest_reloads_total", "counter", "Manifest reloads by result."),
)
PROBE_FAMILY = ("svc_port_probe_duration_seconds", "histogram", "Latency of the probes of a service's port.")

#: States in which nothing of ours should listen on the port: no svc_port_up series.
_NO_PORT_UP_STATES = frozenset({ServiceState.DISABLED, ServiceState.DEPRECATED})
_STATES = tuple(ServiceState)


def _header(name: str, kind: str, doc: str) -> str:
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def _label(value: str) -> str:
    """A label value escaped for the text format."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _num(value: float) -> str:
    """A sample value as Prometheus writes it: +Inf, -Inf, NaN, integers without '.0'."""
    if type(value) is int:
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _families(text: str) -> Iterable[Metric]:
    from prometheus_client.parser import text_string_to_metric_families

    return text_string_to_metric_families(text)


class _TextCollector:
    """A collector whose one implementation is ``render_text``. A registry asks only
    for ``describe``/``collect`` (prometheus_client's ``Collector`` is that protocol)."""

    def render_text(self) -> str:
        raise NotImplementedError

    def _headers(self) -> str:
        raise NotImplementedError

    def describe(self) -> Iterable[Metric]:
        """Names only, so the registry can refuse duplicates without a snapshot."""
        return _families(self._headers())

    def collect(self) -> Iterable[Metric]:
        return _families(self.render_text())


class ProbeStats(_TextCollector):
    """The ``svc_port_probe_duration_seconds`` histogram, fed by the supervisor.

    One lock guards all series: the supervisor observes from its event loop while
    the HTTP server's threads scrape, and a scrape copies the counts under it.
    """

    def __init__(self, buckets: Sequence[float] = PROBE_BUCKETS) -> None:
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds:
            raise ValueError("ProbeStats needs at least one finite bucket")
        self._bounds = tuple(bounds)
        self._le: tuple[str, ...] = ()  # the `le` labels, written at the first render
        self._lock = threading.Lock()
        # (service, port label) -> ([count per bucket, not cumulative, +Inf last], [sum])
        self._series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        # A group's observations so far (same shape): each of its members counts the
        # difference since it joined, kept as (group, counts and sum when it joined).
        self._groups: dict[object, tuple[list[int], list[float]]] = {}
        self._members: dict[tuple[str, str], tuple[object, list[int], float]] = {}

    def _series_of(self, key: tuple[str, str]) -> tuple[list[int], list[float]]:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = ([0] * (len(self._bounds) + 1), [0.0])
        return series

    def observe_probe(self, service: str, port: int, seconds: float) -> None:
        """Record one probe of ``service`` on ``port`` that took ``seconds``."""
        seconds = max(float(seconds), 0.0)
        index = bisect.bisect_left(self._bounds, seconds)  # `le` is inclusive
        key = (service, str(port))
        with self._lock:
            series = self._series_of(key)
            series[0][index] += 1
            series[1][0] += seconds

    def join_group(self, group: object, service: str, port: int) -> None:
        """From now on every ``observe_group(group, ...)`` counts as one probe of
        ``service`` on ``port`` too (one shared sweep probes many services at once)."""
        key = (service, str(port))
        with self._lock:
            counts, total = self._groups.setdefault(group, ([0] * (len(self._bounds) + 1), [0.0]))
            self._fold(key)
            self._series_of(key)
            self._members[key] = (group, list(counts), total[0])

    def leave_group(self, group: object, service: str, port: int) -> None:
        """Stop counting ``group``'s probes for ``service``; what it counted stays."""
        key = (service, str(port))
        with self._lock:
            member = self._members.get(key)
            if member is not None and member[0] is group:
                self._fold(key)

    def observe_group(self, group: object, seconds: float) -> None:
        """One probe, taking ``seconds``, of every member of ``group``."""
        seconds = max(float(seconds), 0.0)
        index = bisect.bisect_left(self._bounds, seconds)
        with self._lock:
            counts, total = self._groups.setdefault(group, ([0] * (len(self._bounds) + 1), [0.0]))
            counts[index] += 1
            total[0] += seconds

    def _fold(self, key: tuple[str, str]) -> None:
        """Move a member's share of its group into its own series (under the lock)."""
        member = self._members.pop(key, None)
        if member is None:
            return
        group, since, since_total = member
        counts, total = self._groups[group]
        own_counts, own_total = self._series_of(key)
        for i, (now, then) in enumerate(zip(counts, since)):
            own_counts[i] += now - then
        own_total[0] += total[0] - since_total

    def forget(self, service: str) -> None:
        """Drop every series of ``service`` (removed by a reload, or its port changed)."""
        with self._lock:
            for key in [k for k in self._series if k[0] == service]:
                del self._series[key]
                self._members.pop(key, None)

    def _headers(self) -> str:
        return _header(*PROBE_FAMILY)

    def render_text(self) -> str:
        with self._lock:
            copied = [(key, list(counts), total[0]) for key, (counts, total) in self._series.items()]
            for i, (key, counts, total) in enumerate(copied):
                member = self._members.get(key)
                if member is not None:
                    group, since, since_total = member
                    now, now_total = self._groups[group]
                    copied[i] = (key, [c + a - b for c, a, b in zip(counts, now, since)], total + now_total[0] - since_total)
        if not self._le:  # `le` written as prometheus_client writes it ("1.0", "0.005")
            from prometheus_client.utils import floatToGoString

            self._le = tuple(str(floatToGoString(b)) for b in self._bounds) + ("+Inf",)  # type: ignore[no-untyped-call]
        name = PROBE_FAMILY[0]
        out = [self._headers()]
        add = out.append
        for (service, port), counts, total in copied:
            labels = f'service="{_label(service)}",port="{_label(port)}"'
            cumulative = 0
            for le, n in zip(self._le, counts):
                cumulative += n
                add(f'{name}_bucket{{{labels},le="{le}"}} {cumulative}\n')
            add(f"{name}_count{{{labels}}} {cumulative}\n{name}_sum{{{labels}}} {_num(total)}\n")
        return "".join(out)


class SupervisorCollector(_TextCollector):
    """Every ``svc_*`` family but the histogram, from one snapshot per scrape."""

    def __init__(self, get_snapshot: SnapshotSource, version: str = __version__) -> None:
        self._get_snapshot = get_snapshot
        self._version = version

    def _headers(self) -> str:
        return "".join(_header(*family) for family in FAMILIES)

    def render_text(self) -> str:
        snap = self._get_snapshot()  # the one read of this scrape
        lines: dict[str, list[str]] = {name: [] for name, _, _ in FAMILIES}
        info = f'name="{_label(snap.name)}",manifest="{_label(snap.manifest)}",version="{_label(self._version)}"'
        lines["svc_info"].append(f"svc_info{{{info}}} 1\n")
        reloads = lines["svc_manifest_reloads_total"]
        reloads.append(f'svc_manifest_reloads_total{{result="ok"}} {_num(snap.reloads_ok)}\n')
        reloads.append(f'svc_manifest_reloads_total{{result="error"}} {_num(snap.reloads_error)}\n')
        port_up, conflict, state = lines["svc_port_up"], lines["svc_port_conflict"], lines["svc_service_state"]
        restarts, memory_restarts = lines["svc_service_restarts_total"], lines["svc_memory_restarts_total"]
        start_time, ready = lines["svc_service_start_time_seconds"], lines["svc_service_ready_duration_seconds"]
        rss, cpu = lines["svc_process_resident_memory_bytes"], lines["svc_process_cpu_seconds_total"]
        for svc in snap.services:
            name, tier, current = _label(svc.name), _label(svc.tier), svc.state
            if svc.port is not None:
                if current not in _NO_PORT_UP_STATES:  # never probed counts as down
                    up = 1 if svc.port_up else 0
                    port_up.append(f'svc_port_up{{service="{name}",tier="{tier}",port="{svc.port}"}} {up}\n')
                held = 1 if current is ServiceState.CONFLICT or svc.conflict_pid is not None else 0
                conflict.append(f'svc_port_conflict{{service="{name}",port="{svc.port}"}} {held}\n')
            prefix = f'svc_service_state{{service="{name}",tier="{tier}",state="'
            state.extend([f'{prefix}{s.value}"}} {1 if s is current else 0}\n' for s in _STATES])
            only = f'{{service="{name}"}}'
            restarts.append(f"svc_service_restarts_total{only} {_num(svc.restarts_total)}\n")
            memory_restarts.append(f"svc_memory_restarts_total{only} {_num(svc.memory_restarts)}\n")
            # Facts that do not exist yet (never started, not running) have no series.
            if svc.started_at is not None:
                start_time.append(f"svc_service_start_time_seconds{only} {_num(svc.started_at)}\n")
            if svc.ready_duration is not None:
                ready.append(f"svc_service_ready_duration_seconds{only} {_num(svc.ready_duration)}\n")
            if svc.rss_bytes is not None:
                rss.append(f"svc_process_resident_memory_bytes{only} {_num(svc.rss_bytes)}\n")
            if svc.cpu_seconds is not None:
                cpu.append(f"svc_process_cpu_seconds_total{only} {_num(svc.cpu_seconds)}\n")
        out: list[str] = []
        for family in FAMILIES:
            out.append(_header(*family))
            out.extend(lines[family[0]])
        return "".join(out)


class Metrics:
    """The daemon's metrics: the snapshot collector, the probe histogram and the
    daemon's own process metrics, on one registry of their own.

    The supervisor calls ``observe_probe`` / ``forget``; the HTTP server calls
    ``render``. ``get_snapshot`` is called from the server's threads: it must
    return an immutable snapshot (returning the latest published object is fine).
    """

    def __init__(self, get_snapshot: SnapshotSource, *, process_metrics: bool = True) -> None:
        self.services = SupervisorCollector(get_snapshot)
        self.probes = ProbeStats()
        self._process_metrics = process_metrics
        self._registries: tuple[CollectorRegistry, CollectorRegistry] | None = None
        self._building = threading.Lock()  # two first scrapes at once build them once

    @property
    def registry(self) -> CollectorRegistry:
        """Every metric, on a registry of its own (built, with prometheus_client, at first use)."""
        return self._built()[0]

    def _built(self) -> tuple[CollectorRegistry, CollectorRegistry]:
        with self._building:
            if self._registries is None:
                from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
                from prometheus_client.registry import CollectorRegistry

                registry = CollectorRegistry()
                registry.register(self.services)  # type: ignore[arg-type]
                registry.register(self.probes)  # type: ignore[arg-type]
                own = CollectorRegistry()  # small: rendered by prometheus_client itself
                if self._process_metrics:
                    for collector in (ProcessCollector(registry=None), PlatformCollector(registry=None)):
                        own.register(collector)
                        registry.register(collector)
                    registry.register(GCCollector(registry=own))
                self._registries = (registry, own)
            return self._registries

    def observe_probe(self, service: str, port: int, seconds: float) -> None:
        """Record one probe (the supervisor calls this after every probe of a port)."""
        self.probes.observe_probe(service, port, seconds)

    def join_group(self, group: object, service: str, port: int) -> None:
        """``service`` is probed by ``group``'s shared sweeps from now on (``ProbeStats``)."""
        self.probes.join_group(group, service, port)

    def leave_group(self, group: object, service: str, port: int) -> None:
        self.probes.leave_group(group, service, port)

    def observe_group(self, group: object, seconds: float) -> None:
        """One shared sweep of ``group`` that took ``seconds``: a probe of each member."""
        self.probes.observe_group(group, seconds)

    def forget(self, service: str) -> None:
        """Drop the probe series of a service removed by a reload."""
        self.probes.forget(service)

    def render(self) -> tuple[bytes, str]:
        """One scrape: (body, content type). The same samples as ``generate_latest(self.registry)``."""
        own = self._built()[1]
        from prometheus_client import generate_latest

        text = self.services.render_text() + self.probes.render_text()
        return text.encode() + generate_latest(own), CONTENT_TYPE
