"""Immutable views of the supervisor's live state.

The supervisor publishes these; the control server, the metrics collector, the
status page and the CLI formatters only read them. Plain data, stdlib only, and
round-trippable through JSON (``to_dict`` / ``from_dict``) so the CLI sees
exactly what the daemon sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from supervisord_lite.core.states import ServiceState


@dataclass(frozen=True, slots=True)
class ServiceSnapshot:
    name: str
    tier: str
    port: int | None
    state: ServiceState
    url: str = ""
    description: str = ""
    pid: int | None = None
    started_at: float | None = None  # unix time of the last spawn
    ready_at: float | None = None  # unix time it last became ready
    ready_duration: float | None = None  # spawn-to-ready seconds of the last start
    restarts: int = 0  # since the last explicit up/restart; survives reloads and a new daemon
    restarts_total: int = 0  # by this daemon process, never reset (svc_service_restarts_total)
    port_up: bool | None = None  # last probe of the port; None when never probed
    probe_latency: float | None = None  # seconds, last probe
    conflict_pid: int | None = None
    conflict_cmdline: str = ""
    reason: str = ""  # why it is in this state, for people
    blocked_by: tuple[str, ...] = ()  # dependencies a waiting service waits on
    next_retry_at: float | None = None  # unix time of the next try (backoff/failed)
    exit_code: int | None = None
    rss_bytes: int | None = None
    cpu_seconds: float | None = None
    memory_restarts: int = 0
    replaced_by: str | None = None
    paused: bool = False  # its main process is stopped by a signal or a debugger (T state): it runs no code

    def to_dict(self) -> dict[str, Any]:
        # every field is a plain value (blocked_by a tuple of str): no deep copy needed,
        # which makes this ten times cheaper than dataclasses.asdict (an `up` of 1000 services sends thousands)
        d = {name: getattr(self, name) for name in _SERVICE_FIELDS}
        d["state"] = self.state.value
        d["blocked_by"] = list(self.blocked_by)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceSnapshot:
        values = {k: v for k, v in data.items() if k in _SERVICE_FIELD_SET}
        values["state"] = ServiceState(values["state"])
        values["blocked_by"] = tuple(values.get("blocked_by", ()))
        return cls(**values)


_SERVICE_FIELDS = tuple(f.name for f in fields(ServiceSnapshot))
_SERVICE_FIELD_SET = frozenset(_SERVICE_FIELDS)  # what from_dict takes (the CLI reads thousands in an `up`)


@dataclass(frozen=True, slots=True)
class SupervisorSnapshot:
    name: str
    manifest: str
    pid: int
    started_at: float
    services: tuple[ServiceSnapshot, ...] = field(default_factory=tuple)
    reloads_ok: int = 0
    reloads_error: int = 0
    manifest_mtime: float | None = None  # of the file as the daemon last loaded it
    #: every file it was read from (svc.local.toml, -f files, .env) -> its mtime then (None: absent)
    source_mtimes: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "manifest": self.manifest,
            "pid": self.pid,
            "started_at": self.started_at,
            "reloads_ok": self.reloads_ok,
            "reloads_error": self.reloads_error,
            "manifest_mtime": self.manifest_mtime,
            "source_mtimes": dict(self.source_mtimes),
            "services": [s.to_dict() for s in self.services],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupervisorSnapshot:
        return cls(
            name=data["name"],
            manifest=data["manifest"],
            pid=data["pid"],
            started_at=data["started_at"],
            reloads_ok=data.get("reloads_ok", 0),
            reloads_error=data.get("reloads_error", 0),
            manifest_mtime=data.get("manifest_mtime"),
            source_mtimes=dict(data.get("source_mtimes") or {}),
            services=tuple(ServiceSnapshot.from_dict(s) for s in data["services"]),
        )

    def service(self, name: str) -> ServiceSnapshot | None:
        return next((s for s in self.services if s.name == name), None)
