"""The bench's workloads: what every runner is asked to run.

A workload is plain data: services with a port, an argv, dependencies and a wave
(the bare loop's stand-in for start order: everything of one wave is spawned
together once the previous wave accepts). Ports are free ones, checked by binding them
(see free_ports).
"""

from __future__ import annotations

import random
import shlex
import shutil
import socket
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
STUB = BENCH / "stub.py"
SOCAT = shutil.which("socat")
DEMO_MANIFEST = ROOT / "config" / "demo.toml"
ALL_FIGURES = frozenset({"cold_up", "lag", "idle_cpu", "rss", "status", "metrics", "restart", "down"})
START_STOP = frozenset({"cold_up", "lag", "down"})
#: socat writes no "listening" record: no readiness lag for it.
SOCAT_FIGURES = ALL_FIGURES - {"lag"}


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    argv: tuple[str, ...]
    depends_on: tuple[str, ...] = ()
    wave: int = 0
    tier: str = "bench"


@dataclass(frozen=True)
class Workload:
    key: str  # "tiny-50", "chain-10", "demo"
    title: str
    services: tuple[Service, ...]
    record: Path  # where the services append their "listening" lines
    #: Which figures this workload measures.
    figures: frozenset[str] = ALL_FIGURES
    #: Only runners that can express the dependencies (bare waves and ours).
    ordered: bool = False
    #: For ours: the manifest's tiers (name -> order); one "bench" tier by default.
    tiers: dict[str, int] = field(default_factory=lambda: {"bench": 0})
    #: For ours: extra per-service manifest keys (ready probes of the demo platform).
    extra: dict[str, dict[str, object]] = field(default_factory=dict)
    #: For ours: deprecated/disabled entries, kept so their ports stay reserved: (name, tier, port, replaced_by).
    reserved: tuple[tuple[str, str, int, str], ...] = ()

    #: "stub" (bench/stub.py, records its own "listening") or "socat" (finds its pids by port).
    kind: str = "stub"

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.services]


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections."""
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


#: The lowest port the bench picks from (below: well-known services of this machine).
LOWEST_PORT = 10000


def free_ports(n: int) -> list[int]:
    """n distinct ports on 127.0.0.1 that are free (each bound, held together while chosen),
    below the kernel's ephemeral range when there is room for them.

    The bench frees its ports between a down and the next up, and holds a thousand of them
    for minutes: from the ephemeral range, any outgoing connection on the machine (other
    programs' probes and tests) may take one meanwhile, and a supervisor's restart then
    fails with "address already in use". Below that range only a listener can take a port.
    """
    if n <= 0:
        return []
    low, _high = ephemeral_range()
    pool = list(range(LOWEST_PORT, low))
    if len(pool) < 4 * n:
        return _os_ports(n)
    start = random.randrange(len(pool))
    chosen: list[socket.socket] = []
    try:
        for port in pool[start:] + pool[:start]:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            chosen.append(s)
            if len(chosen) == n:
                return [int(s.getsockname()[1]) for s in chosen]
        return _os_ports(n)
    finally:
        for s in chosen:
            s.close()


def _os_ports(n: int) -> list[int]:
    """n distinct ports the OS picks (from its ephemeral range)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def stub_argv(port: int, name: str, record: Path, delay: float = 0.0) -> tuple[str, ...]:
    argv = [sys.executable, "-S", str(STUB), str(port), name, str(record)]
    if delay:
        argv.append(f"{delay:g}")
    return tuple(argv)


def tiny(n: int, work: Path) -> Workload:
    """N independent stubs in one tier."""
    record = work / f"tiny-{n}.records.jsonl"
    ports = free_ports(n)
    services = tuple(Service(f"s{i:03d}", p, stub_argv(p, f"s{i:03d}", record)) for i, p in enumerate(ports))
    return Workload(f"tiny-{n}", f"N = {n} tiny services (one tier, no dependencies)", services, record)


def socat_argv(port: int) -> tuple[str, ...]:
    """A service that starts in about a millisecond: socat listening on its port,
    forking `true` for each connection (the probes' connects included)."""
    return (SOCAT or "socat", f"TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1", "SYSTEM:true")


def socat(n: int, work: Path) -> Workload:
    """N independent socat listeners in one tier: the supervisor's own cost, unhidden
    by a Python service's 20-30 ms of start-up."""
    record = work / f"socat-{n}.records.jsonl"
    services = tuple(Service(f"x{i:04d}", p, socat_argv(p)) for i, p in enumerate(free_ports(n)))
    return Workload(f"socat-{n}", f"N = {n} socat services (one tier, no dependencies)", services, record,
                    figures=SOCAT_FIGURES, kind="socat")


def chain(depth: int, work: Path) -> Workload:
    """c00 <- c01 <- ... : each depends on the one before."""
    record = work / f"chain-{depth}.records.jsonl"
    ports = free_ports(depth)
    services = tuple(
        Service(f"c{i:02d}", p, stub_argv(p, f"c{i:02d}", record), depends_on=(f"c{i - 1:02d}",) if i else (), wave=i)
        for i, p in enumerate(ports)
    )
    return Workload(f"chain-{depth}", f"Dependency chain of depth {depth}", services, record,
                    figures=START_STOP, ordered=True)


def demo(work: Path, manifest: Path = DEMO_MANIFEST) -> Workload:
    """config/demo.toml with its ports moved to free ones (its own high ports may be
    taken on this machine), absolute `python`, and --record on every command."""
    with manifest.open("rb") as f:
        data = tomllib.load(f)
    record = work / "demo.records.jsonl"
    tiers = {name: int(t.get("order", 0)) for name, t in data.get("tiers", {}).items()}
    svcs = data["services"]
    ports = dict(zip(svcs, free_ports(len(svcs)), strict=True))
    services, extra, reserved = [], {}, []
    for name, s in svcs.items():
        port = ports[name]
        if s.get("status", "active") != "active":
            reserved.append((name, s["tier"], port, s.get("replaced_by", "")))
            continue
        cmd = shlex.split(s["command"]) if isinstance(s["command"], str) else list(s["command"])
        if cmd[0] in ("python", "python3"):
            cmd[0] = sys.executable
        cmd = [c.replace("{port}", str(port)).replace("{name}", name) for c in cmd]
        cmd += ["--record", str(record)]
        services.append(Service(name, port, tuple(cmd), tuple(s.get("depends_on", ())),
                                wave=tiers.get(s["tier"], 0), tier=s["tier"]))
        extra[name] = {k: s[k] for k in ("ready", "description", "url") if k in s}
    return Workload("demo", f"Demo platform ({manifest.relative_to(ROOT) if manifest.is_relative_to(ROOT) else manifest}, "
                    f"{len(services)} active services in {len({s.tier for s in services})} tiers)", tuple(services), record,
                    figures=START_STOP, ordered=True, tiers=tiers, extra=extra, reserved=tuple(reserved))


def metrics(n: int, work: Path) -> Workload:
    """N tiny services for one figure: the time of a metrics scrape (ours only)."""
    wl = tiny(n, work)
    return Workload(f"metrics-{n}", f"Metrics scrape with {n} services (ours only)", wl.services, wl.record,
                    figures=START_STOP | {"metrics"})
