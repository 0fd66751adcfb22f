"""A loaded manifest back to TOML-ready data, for ``svc config``.

Defaults are filled in and placeholders expanded; literal braces are escaped again,
so the data parses back to an equal manifest.
"""

from __future__ import annotations

from typing import Any

from supervisord_lite.core.durations import format_duration
from supervisord_lite.core.model import ExportSpec, Manifest, ProbeSpec, ServiceSpec


def _escape_braces(text: str) -> str:
    """A resolved value written so that the loader reads it back as is: no placeholder, no variable."""
    return _escape_dollars(text).replace("{", "{{").replace("}", "}}")


def _escape_dollars(text: str) -> str:
    return text.replace("$", "$$")


def _probe_to_dict(probe: ProbeSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"tcp": probe.tcp}
    if probe.http is not None:
        out["http"] = _escape_braces(probe.http)
    if probe.exec is not None:
        out["exec"] = [_escape_braces(arg) for arg in probe.exec]
    if probe.log is not None:
        out["log"] = probe.log
    if probe.after is not None:
        out["after"] = format_duration(probe.after)
    out["timeout"] = format_duration(probe.timeout)
    return out


def service_to_dict(spec: ServiceSpec) -> dict[str, Any]:
    """One resolved service table: defaults filled in, placeholders expanded (braces escaped)."""
    out: dict[str, Any] = {"tier": spec.tier}
    if spec.port is not None:
        out["port"] = spec.port
    if spec.command:
        out["command"] = [_escape_braces(arg) for arg in spec.command]
    out |= {
        "title": spec.title,
        "description": spec.description,
        "url": _escape_braces(spec.url),
        "status": spec.status.value,
    }
    if spec.replaced_by is not None:
        out["replaced_by"] = spec.replaced_by
    out |= {
        "kind": spec.kind.value,
        "groups": list(spec.groups),
        "depends_on": list(spec.depends_on),
        "ready": _probe_to_dict(spec.ready),
        "ready_timeout": format_duration(spec.ready_timeout),
    }
    if spec.health is not None:
        out["health"] = _probe_to_dict(spec.health)
    out |= {
        "probe_interval": format_duration(spec.probe_interval),
        "unhealthy_threshold": spec.unhealthy_threshold,
        "restart": spec.restart.value,
        "start_limit": spec.start_limit,
        "start_limit_window": format_duration(spec.start_limit_window),
        "backoff": {
            "first": format_duration(spec.backoff.first),
            "max": format_duration(spec.backoff.max),
            "reset_after": format_duration(spec.backoff.reset_after),
        },
        "failed_retry": format_duration(spec.failed_retry),
        "env": {key: _escape_braces(value) for key, value in spec.env.items()},
        "cwd": _escape_dollars(str(spec.cwd)),
    }
    if spec.env_files:
        files = [_escape_dollars(str(file)) for file in spec.env_files]
        out["env_file"] = files[0] if len(files) == 1 else files
    out |= {
        "stop_signal": spec.stop_signal.name,
        "stop_timeout": format_duration(spec.stop_timeout),
        "on_dependency_restart": spec.on_dependency_restart.value,
    }
    if spec.user is not None:
        out["user"] = spec.user
    if spec.max_memory is not None:
        out["max_memory"] = spec.max_memory
    if spec.pid_file is not None:
        out["pid_file"] = str(spec.pid_file)
    out |= {"watch": list(spec.watch), "watch_ignore": list(spec.watch_ignore)}
    if not spec.export.is_empty:
        out["export"] = _export_to_dict(spec.export)
    return out


def _export_to_dict(export: ExportSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if export.image is not None:
        out["image"] = _escape_braces(export.image)
    if export.build is not None:
        out["build"] = _escape_braces(str(export.build))
    if export.command is not None:
        out["command"] = [_escape_braces(arg) for arg in export.command]
    if export.env:
        out["env"] = {key: _escape_braces(value) for key, value in export.env.items()}
    return out


def manifest_to_dict(m: Manifest) -> dict[str, Any]:
    """The resolved manifest as TOML-ready data: ``parse_manifest(tomli_w.dumps(...))``
    gives back an equal Manifest (for the same path)."""
    sup = m.supervisor
    return {
        "supervisor": {
            "name": sup.name,
            "state_dir": str(sup.state_dir),
            "metrics": sup.metrics,
            "probe_interval": format_duration(sup.probe_interval),
            "log_max_bytes": sup.log_max_bytes,
            "log_backups": sup.log_backups,
            "http_logs": sup.http_logs,
            "restore": sup.restore,
            "dotenv": sup.dotenv,
        },
        "tiers": {
            tier.name: {"order": tier.order, "ports": [str(r) for r in tier.ports], "description": tier.description}
            for tier in m.tiers.values()
        },
        "services": {name: service_to_dict(spec) for name, spec in m.services.items()},
    }
