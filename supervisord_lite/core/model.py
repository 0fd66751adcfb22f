"""The typed, immutable model of a manifest.

Everything here is plain data: the loader (``manifest.py`` and the section readers it calls) builds it, every other
module reads it. Placeholders (``{port}``, ``{name}``, ``{state_dir}``) are already
expanded and relative paths already resolved against the manifest's folder.

This module imports only the standard library.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType


DEFAULT_TIER = "default"  # the tier of every service while the manifest declares no [tiers]


class RestartPolicy(enum.StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NO = "no"


class Status(enum.StrEnum):
    """The manifest's lifecycle status of a service (not its runtime state)."""

    ACTIVE = "active"
    DISABLED = "disabled"
    DEPRECATED = "deprecated"


class Kind(enum.StrEnum):
    SERVICE = "service"
    ONESHOT = "oneshot"


class DependencyRestart(enum.StrEnum):
    IGNORE = "ignore"
    RESTART = "restart"


@dataclass(frozen=True, slots=True)
class PortRange:
    start: int
    end: int  # inclusive

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port <= self.end

    def __str__(self) -> str:
        return f"{self.start}-{self.end}" if self.start != self.end else str(self.start)


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    order: int
    ports: tuple[PortRange, ...] = ()
    description: str = ""

    def allows(self, port: int) -> bool:
        """A tier without ranges reserves nothing and allows any port."""
        return not self.ports or any(port in r for r in self.ports)


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """A readiness or liveness check. Every condition that is set must hold.

    ``tcp``: the service's port accepts a TCP connection on 127.0.0.1.
    ``http``: GET http://127.0.0.1:{port}{http} answers with a status below 400.
    ``exec``: the command exits 0.
    ``log``: a line of the service's output matches this regular expression.
    ``after``: the process has stayed alive this many seconds.
    ``timeout``: seconds one attempt of an http or exec check may take.
    """

    tcp: bool = False
    http: str | None = None
    exec: tuple[str, ...] | None = None
    log: str | None = None
    after: float | None = None
    timeout: float = 2.0

    @property
    def is_empty(self) -> bool:
        return not (self.tcp or self.http or self.exec or self.log or self.after)


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float = 0.5
    max: float = 30.0
    reset_after: float = 30.0  # seconds ready before the delay goes back to `first`


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """How ``svc export`` runs a service in a container (Compose, Kubernetes).

    From ``[services.NAME.export]`` merged over the manifest's top-level
    ``[export]``. systemd units ignore it: they run the service's own command.
    """

    image: str | None = None
    build: Path | None = None  # a build context (absolute); Compose only
    command: tuple[str, ...] | None = None  # None: the service's command; (): the image's own
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # over the service's env

    @property
    def is_empty(self) -> bool:
        return self.image is None and self.build is None and self.command is None and not self.env


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    tier: str
    command: tuple[str, ...]
    port: int | None = None
    description: str = ""
    url: str = ""
    status: Status = Status.ACTIVE
    replaced_by: str | None = None
    kind: Kind = Kind.SERVICE
    ready: ProbeSpec = field(default_factory=ProbeSpec)
    ready_timeout: float = 30.0
    health: ProbeSpec | None = None  # None: liveness uses `ready` (minus log/after)
    probe_interval: float = 2.0
    unhealthy_threshold: int = 3
    depends_on: tuple[str, ...] = ()
    restart: RestartPolicy = RestartPolicy.ON_FAILURE
    start_limit: int = 5  # restarts allowed within start_limit_window
    start_limit_window: float = 60.0
    backoff: Backoff = field(default_factory=Backoff)
    failed_retry: float = 60.0  # 0 turns the slow retry out of `failed` off
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    env_files: tuple[Path, ...] = ()  # read in order, a later file winning
    cwd: Path = Path(".")
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 10.0
    user: str | None = None
    on_dependency_restart: DependencyRestart = DependencyRestart.IGNORE
    max_memory: int | None = None  # bytes
    pid_file: Path | None = None  # a program that daemonizes writes its pid here; that pid is supervised
    watch: tuple[str, ...] = ()
    watch_ignore: tuple[str, ...] = ()
    title: str = ""  # display name for people ("Client Portal"); `name` is what `svc` takes
    groups: tuple[str, ...] = ()  # named sets the CLI selects with @GROUP (`svc up @backend`)
    export: ExportSpec = field(default_factory=ExportSpec)

    @property
    def is_active(self) -> bool:
        return self.status is Status.ACTIVE

    @property
    def env_file(self) -> Path | None:
        """The first env_file (None without one); ``env_files`` lists them all."""
        return self.env_files[0] if self.env_files else None

    @property
    def liveness(self) -> ProbeSpec:
        """The probe run every probe_interval once the service is ready."""
        if self.health is not None:
            return self.health
        r = self.ready
        return ProbeSpec(tcp=r.tcp, http=r.http, exec=r.exec, timeout=r.timeout)


@dataclass(frozen=True, slots=True)
class SupervisorSpec:
    name: str = "svc"
    state_dir: Path = Path(".svc")
    metrics: str = "127.0.0.1:9108"  # "" turns the endpoint off
    probe_interval: float = 2.0
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 3
    http_logs: bool = False  # serve service output at /api/logs/NAME (readable by every local user)
    restore: bool = True  # a starting daemon starts again what was wanted when the last one stopped
    instance: int = 0  # which side-by-side instance (core.instances): ports shifted, own state_dir
    dotenv: bool = True  # read the .env beside the manifest for ${VAR} interpolation

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        if not self.metrics:
            return None
        host, _, port = self.metrics.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "svc.sock"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path
    supervisor: SupervisorSpec
    tiers: Mapping[str, Tier]
    services: Mapping[str, ServiceSpec]  # in file order
    overlays: tuple[Path, ...] = ()  # further files (-f) merged over `path` and its svc.local.toml

    def active(self) -> list[ServiceSpec]:
        return [s for s in self.services.values() if s.is_active]

    def tier_order(self, service: ServiceSpec) -> int:
        tier = self.tiers.get(service.tier)
        return tier.order if tier else 0
