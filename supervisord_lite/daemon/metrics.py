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

A scrape never loads prometheus_client (with what it pulls in: wsgiref, urllib.request,
gzip, email; ~2 MB resident and ~15 ms of imports): the text above needs none of it, and
the daemon's own process series are read here too (``ProcessStats``). It loads for
whoever uses ``Metrics.registry``.
"""

from __future__ import annotations

import bisect
import gc
import math
import os
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


def _go_float(value: float) -> str:
    """A bucket bound as prometheus_client (and Go) write ``le``: "0.005", "1.0", "2.5e+06"."""
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


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
        if not self._le:
            self._le = tuple(_go_float(b) for b in self._bounds) + ("+Inf",)
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


#: The daemon's own families: the names, types and help texts of prometheus_client's
#: ProcessCollector, PlatformCollector and GCCollector, which dashboards know.
PROCESS_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes."),
    ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes."),
    ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds."),
    ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds."),
    ("process_open_fds", "gauge", "Number of open file descriptors."),
    ("process_max_fds", "gauge", "Maximum number of open file descriptors."),
    ("python_info", "gauge", "Python platform information"),
    ("python_gc_objects_collected_total", "counter", "Objects collected during gc"),
    ("python_gc_objects_uncollectable_total", "counter", "Uncollectable objects found during GC"),
    ("python_gc_collections_total", "counter", "Number of times this generation was collected"),
)


class ProcessStats(_TextCollector):
    """The daemon's own ``process_*``, ``python_info`` and ``python_gc_*`` series.

    The same series as prometheus_client's three standard collectors (a test compares
    them), read from /proc/self and ``gc`` here so that serving /metrics never imports
    prometheus_client: its package brings wsgiref, urllib.request and gzip along, ~1.5 MB
    resident and ~15 ms, for a dozen lines. Where /proc cannot be read the ``process_*``
    series are left out, as prometheus_client leaves them out.
    """

    def __init__(self, proc: str = "/proc/self") -> None:
        import platform

        self._proc = proc
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._boot_time = _boot_time()
        major, minor, patchlevel = platform.python_version_tuple()
        self._info = (
            f'python_info{{implementation="{_label(platform.python_implementation())}",major="{major}",'
            f'minor="{minor}",patchlevel="{patchlevel}",version="{_label(platform.python_version())}"}} 1\n'
        )

    def _headers(self) -> str:
        return "".join(_header(*family) for family in PROCESS_FAMILIES)

    def render_text(self) -> str:
        values: dict[str, float] = {}
        if self._boot_time is not None:
            try:
                with open(f"{self._proc}/stat", "rb") as f:
                    fields = f.read().rpartition(b")")[2].split()
                values["process_virtual_memory_bytes"] = float(fields[20])
                values["process_resident_memory_bytes"] = float(fields[21]) * self._page
                values["process_start_time_seconds"] = float(fields[19]) / self._ticks + self._boot_time
                values["process_cpu_seconds_total"] = (float(fields[11]) + float(fields[12])) / self._ticks
            except (OSError, IndexError, ValueError):
                pass
            try:
                with open(f"{self._proc}/limits", "rb") as f:
                    max_fds = next(float(line.split()[3]) for line in f if line.startswith(b"Max open files"))
                values["process_open_fds"] = float(len(os.listdir(f"{self._proc}/fd")))
                values["process_max_fds"] = max_fds
            except (OSError, IndexError, ValueError, StopIteration):
                pass
        out = []
        for name, kind, doc in PROCESS_FAMILIES[:6]:
            if name in values:
                out.append(f"{_header(name, kind, doc)}{name} {_num(values[name])}\n")
        out.append(_header(*PROCESS_FAMILIES[6]) + self._info)
        stats = gc.get_stats()
        for (name, kind, doc), key in zip(PROCESS_FAMILIES[7:], ("collected", "uncollectable", "collections")):
            out.append(_header(name, kind, doc))
            out.extend(f'{name}{{generation="{generation}"}} {stat[key]}\n' for generation, stat in enumerate(stats))
        return "".join(out)


def _boot_time() -> float | None:
    """The machine's boot time (``btime`` of /proc/stat): a process's start counts from it."""
    try:
        with open("/proc/stat", "rb") as f:
            return next(float(line.split()[1]) for line in f if line.startswith(b"btime "))
    except (OSError, IndexError, ValueError, StopIteration):
        return None


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
        self.process = ProcessStats() if process_metrics else None
        self._registry: CollectorRegistry | None = None
        self._building = threading.Lock()  # two first uses at once build it once

    @property
    def registry(self) -> CollectorRegistry:
        """Every metric, on a prometheus_client registry of its own (built at first use;
        ``render`` does not need it)."""
        with self._building:
            if self._registry is None:
                from prometheus_client.registry import CollectorRegistry

                registry = CollectorRegistry()
                for collector in (self.services, self.probes, self.process):
                    if collector is not None:
                        registry.register(collector)  # type: ignore[arg-type]
                self._registry = registry
            return self._registry

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
        text = self.services.render_text() + self.probes.render_text()
        if self.process is not None:
            text += self.process.render_text()
        return text.encode(), CONTENT_TYPE
