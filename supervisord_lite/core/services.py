"""One ``[services.NAME]`` table as the model's ``ServiceSpec``.

The keys are read in groups (description, process, readiness, liveness, restart
policy, dependencies, watch, export). Every key left out, or given a bad value that
is reported, takes the model's default from ``core/model.py``; the few defaults that
depend on other keys (a ready probe on the port, a oneshot's restart policy, the
supervisor's probe_interval) are said where they are applied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from supervisord_lite.core.budget import spend_pattern_characters
from supervisord_lite.core.export_section import ExportDefaults, service_export
from supervisord_lite.core.limits import (
    MAX_COUNT,
    MAX_PATTERN,
    MAX_PATTERNS_TOTAL,
    MAX_SERVICE_NAME,
    MIN_PROBE_INTERVAL,
)
from supervisord_lite.core.locate import ProblemLog
from supervisord_lite.core.logpattern import pattern_problem
from supervisord_lite.core.model import (
    DEFAULT_TIER,
    Backoff,
    DependencyRestart,
    Kind,
    ProbeSpec,
    RestartPolicy,
    ServiceSpec,
    Status,
    SupervisorSpec,
    Tier,
)
from supervisord_lite.core.tables import TableReader
from supervisord_lite.core.values import (
    Placeholders,
    check_arguments,
    env_table,
    parse_signal,
    path_in,
    resolve_path,
    split_command,
    user_name,
)
from supervisord_lite.core.wording import describe, did_you_mean, first_of, shorten

SERVICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,%d}" % (MAX_SERVICE_NAME - 1))
SERVICE_KEYS = (
    "tier", "port", "command", "title", "description", "url", "status", "replaced_by", "kind",
    "ready", "ready_timeout", "health", "probe_interval", "unhealthy_threshold", "depends_on",
    "restart", "start_limit", "start_limit_window", "backoff", "failed_retry", "env", "env_file",
    "cwd", "stop_signal", "stop_timeout", "user", "on_dependency_restart", "max_memory", "watch",
    "watch_ignore", "export", "groups", "pid_file",
)  # fmt: skip
PROBE_KEYS = ("tcp", "http", "exec", "log", "after", "timeout")
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # would break the probe's request line
BACKOFF_KEYS = ("first", "max", "reset_after")

# The model's defaults (core/model.py): every key a service table leaves out takes
# its value from these. name, tier and command have no default; the values given
# here for them are never read.
_MODEL = ServiceSpec(name="", tier=DEFAULT_TIER, command=())
_PROBE_MODEL = ProbeSpec()


def service_section(
    problems: ProblemLog,
    name: str,
    data: Any,
    tiers: Mapping[str, Tier] | None,
    sup: SupervisorSpec,
    base: Path,
    export_defaults: ExportDefaults,
    shared: SharedValues | None = None,
) -> ServiceSpec | None:
    """The service ``name`` of a manifest in folder ``base``, or None when its table is
    not a table. ``tiers`` is None when the manifest declares none."""
    path = ("services", name)
    if len(name) > MAX_SERVICE_NAME:
        problems.error(
            path, f'"{shorten(name)}" is not a valid service name: {len(name):,} characters, at most {MAX_SERVICE_NAME}'
        )
    elif not SERVICE_NAME.fullmatch(name):
        problems.error(
            path,
            f'"{shorten(name)}" is not a valid service name: use letters, digits, "_", "." and "-" '
            '(not first: "." and "-")',
        )
    if not isinstance(data, dict):
        problems.error(path, f"expected a table of service settings, got {describe(data)}")
        return None
    t = TableReader(problems, path, data, SERVICE_KEYS)
    status = t.choice("status", Status, _MODEL.status)
    tier = _tier(t, tiers)
    port = (t.integer("port", 0, 1, 65535) or None) if "port" in data else _MODEL.port
    subst = _placeholders(t, name, port, sup, shared or SharedValues())
    kind = t.choice("kind", Kind, _MODEL.kind)
    return ServiceSpec(
        name=name,
        tier=tier,
        port=port,
        status=status,
        kind=kind,
        **_description(t, subst, status),
        **_process(t, subst, status, base, (shared or SharedValues()).env),
        **_readiness(t, port, subst),
        **_liveness(t, port, subst, sup),
        **_restart_policy(t, kind),
        **_dependencies(t),
        groups=_groups(t),
        watch=_watch_patterns(t, "watch", base),
        watch_ignore=_watch_patterns(t, "watch_ignore", base),
        export=service_export(problems, t, export_defaults, subst, base),
    )


def _tier(t: TableReader, tiers: Mapping[str, Tier] | None) -> str:
    """Required once the manifest declares tiers; until then every service is in the default one."""
    tier = t.string("tier", DEFAULT_TIER if tiers is None else "")
    if isinstance(t.data.get("tier", ""), str):  # a wrong type is reported already
        if tiers is None and tier != DEFAULT_TIER:
            t.error("tier", f'unknown tier "{tier}": the manifest declares no [tiers.{tier}] table')
        elif tiers is not None and "tier" not in t.data:
            t.problems.error(t.path, f'missing key "tier" (one of: {first_of(tiers)})')
        elif tiers is not None and tier not in tiers:
            t.error("tier", f'unknown tier "{tier}"{did_you_mean(tier, tiers)} (tiers: {first_of(tiers)})')
    return tier


@dataclass(frozen=True, slots=True)
class SharedValues:
    """What every service of a manifest may use: ``${VAR}`` variables, the other services'
    ports (``{services.NAME.port}``) and the manifest-wide ``[env]``."""

    variables: Mapping[str, str] = field(default_factory=dict)
    references: Mapping[str, str | None] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


def _placeholders(t: TableReader, name: str, port: int | None, sup: SupervisorSpec, shared: SharedValues) -> Placeholders:
    # A bad port is reported once: "{port}" elsewhere must not add "the service has no port".
    port_text = str(port) if port else (str(t.data["port"]) if "port" in t.data else None)
    values = {"name": name, "port": port_text, "state_dir": str(sup.state_dir)}
    return Placeholders(t.problems, values, shared.variables, shared.references)


def _description(t: TableReader, subst: Placeholders, status: Status) -> dict[str, Any]:
    """What people read about the service, and what replaces it once deprecated."""
    replaced_by = t.optional_string("replaced_by")
    if replaced_by is not None and status is Status.ACTIVE:
        t.problems.warning(t.at("replaced_by"), 'replaced_by has no effect unless status = "deprecated"')
    return {
        "title": t.string("title", _MODEL.title),
        "description": t.string("description", _MODEL.description),
        "url": subst.expand(t.at("url"), t.string("url", _MODEL.url)),
        "replaced_by": replaced_by,
    }


def _process(
    t: TableReader, subst: Placeholders, status: Status, base: Path, shared_env: Mapping[str, str]
) -> dict[str, Any]:
    """How the process is started, limited and stopped. The manifest's [env] comes
    under the service's own env."""
    raw_env = t.table("env")
    env = env_table(t.problems, t.at("env"), raw_env, subst.expand) if raw_env is not None else {}
    if "cwd" in t.data:
        t.data["cwd"] = subst.interpolate(t.at("cwd"), t.data["cwd"])
    pid_file = t.optional_string("pid_file")
    return {
        "command": _command(t, subst, status),
        "env": MappingProxyType({**shared_env, **env}) if shared_env or env else _MODEL.env,
        "env_files": _env_files(t, subst, base),
        "cwd": t.read("cwd", resolve_path(base, str(_MODEL.cwd)), "a path", path_in(base)),
        "user": t.read("user", _MODEL.user, "a user name or uid", user_name),
        "stop_signal": t.read("stop_signal", _MODEL.stop_signal, "a signal", parse_signal),
        "stop_timeout": t.duration("stop_timeout", _MODEL.stop_timeout),
        "max_memory": t.optional_size("max_memory"),
        "pid_file": resolve_path(base, subst.expand(t.at("pid_file"), pid_file)) if pid_file else _MODEL.pid_file,
    }


def _env_files(t: TableReader, subst: Placeholders, base: Path) -> tuple[Path, ...]:
    """A path or an array of paths, read in order (a later file wins); "" means none."""
    if "env_file" not in t.data:
        return _MODEL.env_files
    raw = t.data["env_file"]
    items = raw if isinstance(raw, list) else [raw]
    if isinstance(raw, list) and not all(isinstance(item, str) for item in raw):
        t.error("env_file", f"expected a path or an array of paths, got {describe(raw)}")
        return ()
    files = []
    for item in items:
        if item == "":
            continue
        value = subst.interpolate(t.at("env_file"), item)
        try:
            files.append(path_in(base)(value))
        except (TypeError, ValueError) as exc:
            t.error("env_file", str(exc) or f"expected a path or an array of paths, got {describe(value)}")
    return tuple(dict.fromkeys(files))


def _command(t: TableReader, subst: Placeholders, status: Status) -> tuple[str, ...]:
    """Required, except of a deprecated service (which never starts)."""
    if "command" in t.data:
        argv = split_command(t.problems, t.at("command"), t.data["command"])
        expanded = tuple(subst.expand(t.at("command"), arg) for arg in argv or ())
        return check_arguments(t.problems, t.at("command"), expanded)
    if status is not Status.DEPRECATED:
        message = 'missing key "command" (a string such as "uvicorn app:app --port {port}" or an array)'
        t.problems.error(t.path, message)
    return ()


def _readiness(t: TableReader, port: int | None, subst: Placeholders) -> dict[str, Any]:
    """Without a ready table, a service with a port is ready once the port accepts connections."""
    ready = _probe(t, "ready", port, subst, liveness=False) if "ready" in t.data else None
    return {
        "ready": ready or ProbeSpec(tcp=port is not None),
        "ready_timeout": t.duration("ready_timeout", _MODEL.ready_timeout, positive=True),
    }


def _liveness(t: TableReader, port: int | None, subst: Placeholders, sup: SupervisorSpec) -> dict[str, Any]:
    """The probe_interval defaults to the supervisor's, not the model's."""
    health = _probe(t, "health", port, subst, liveness=True) if "health" in t.data else _MODEL.health
    return {
        "health": health,
        "probe_interval": t.duration("probe_interval", sup.probe_interval, positive=True, shortest=MIN_PROBE_INTERVAL),
        "unhealthy_threshold": t.integer("unhealthy_threshold", _MODEL.unhealthy_threshold, low=1, high=MAX_COUNT),
    }


def _probe(t: TableReader, key: str, port: int | None, subst: Placeholders, liveness: bool) -> ProbeSpec | None:
    """The ready (``liveness`` false) or health probe table ``key``; None when it is not a table."""
    problems, path, data = t.problems, t.at(key), t.data[key]
    if not isinstance(data, dict):
        problems.error(path, f'expected a table such as {{ http = "/health" }}, got {describe(data)}')
        return None
    p = TableReader(problems, path, data, PROBE_KEYS)
    tcp = p.boolean("tcp", port is not None)
    if tcp and port is None:
        p.error("tcp", "tcp = true needs a port, and the service has none")
        tcp = False
    if "tcp" in data and not tcp and port is not None and not liveness:
        p.error("tcp", "a service with a port is ready only once its port accepts connections; remove tcp = false")
    http = p.optional_string("http")
    if http is not None:
        if not http.startswith("/"):
            p.error("http", f'expected a path starting with "/", such as "/health", got "{shorten(http)}"')
        elif _URL_UNSAFE.search(http):
            p.error("http", f'"{shorten(http)}" has blanks or control characters; write them %-encoded ("%20")')
        elif port is None:
            p.error("http", "an http probe needs a port, and the service has none")
        http = subst.expand(p.at("http"), http)
    exec_ = _PROBE_MODEL.exec
    if "exec" in data:
        argv = split_command(problems, p.at("exec"), data["exec"])
        expanded = tuple(subst.expand(p.at("exec"), arg) for arg in argv) if argv else ()
        exec_ = check_arguments(problems, p.at("exec"), expanded) or None
    log = p.optional_string("log")
    after = p.duration("after", 0.0) if "after" in data else _PROBE_MODEL.after
    if liveness:
        for only_ready in ("log", "after"):
            if only_ready in data:
                message = f"{only_ready} only makes sense for ready; a liveness probe can use tcp, http and exec"
                p.error(only_ready, message)
        log = after = None
    elif log is not None:
        _check_pattern(p, log)
    timeout = p.duration("timeout", _PROBE_MODEL.timeout, positive=True)
    spec = ProbeSpec(tcp=tcp, http=http, exec=exec_, log=log, after=after, timeout=timeout)
    if liveness and not (spec.tcp or spec.http or spec.exec):
        problems.error(path, "a health probe needs at least one of tcp, http, exec")
    return spec


def _check_pattern(p: TableReader, log: str) -> None:
    if len(log) > MAX_PATTERN:
        p.error("log", f"a regular expression of {len(log):,} characters: at most {MAX_PATTERN:,}")
        return
    if not spend_pattern_characters(len(log)):
        p.error(
            "log", f"the ready.log patterns of this manifest are longer than {MAX_PATTERNS_TOTAL:,} characters in all"
        )
        return
    try:
        problem = pattern_problem(log)
    except (OverflowError, RecursionError) as exc:
        problem = f"invalid regular expression {log!r}: {exc}"
    if problem is not None:
        p.error("log", problem)


def _restart_policy(t: TableReader, kind: Kind) -> dict[str, Any]:
    """When and how fast a service that stopped starts again; a oneshot is not restarted by default."""
    default_restart = RestartPolicy.NO if kind is Kind.ONESHOT else _MODEL.restart
    return {
        "restart": t.choice("restart", RestartPolicy, default_restart),
        "start_limit": t.integer("start_limit", _MODEL.start_limit, low=0, high=MAX_COUNT),
        "start_limit_window": t.duration("start_limit_window", _MODEL.start_limit_window, positive=True),
        "backoff": _backoff(t),
        "failed_retry": t.duration("failed_retry", _MODEL.failed_retry),
    }


def _backoff(t: TableReader) -> Backoff:
    default = _MODEL.backoff
    if (raw := t.table("backoff")) is None:
        return default
    b = TableReader(t.problems, t.at("backoff"), raw, BACKOFF_KEYS)
    backoff = Backoff(
        first=b.duration("first", default.first),
        max=b.duration("max", default.max),
        reset_after=b.duration("reset_after", default.reset_after),
    )
    if backoff.first > backoff.max:
        b.error("first", f"the first delay ({backoff.first:g}s) is longer than max ({backoff.max:g}s)")
    return backoff


def _dependencies(t: TableReader) -> dict[str, Any]:
    return {
        "depends_on": tuple(dict.fromkeys(t.strings("depends_on"))),
        "on_dependency_restart": t.choice("on_dependency_restart", DependencyRestart, _MODEL.on_dependency_restart),
    }


def _groups(t: TableReader) -> tuple[str, ...]:
    """The named sets the service belongs to; a group name follows the service-name rule
    (the CLI selects one as ``@NAME``)."""
    kept = []
    for group in t.strings("groups"):
        if SERVICE_NAME.fullmatch(group):
            kept.append(group)
        else:
            t.error("groups", f'"{group}" is not a valid group name: use letters, digits, "_", "." and "-" (not first: "." and "-")')
    return tuple(dict.fromkeys(kept))


def _watch_patterns(t: TableReader, key: str, base: Path) -> tuple[str, ...]:
    """Glob patterns relative to the manifest folder; one that leaves it is an error."""
    kept = []
    for pattern in t.strings(key):
        target = resolve_path(base, pattern)
        if not pattern.strip():
            t.error(key, "a watch pattern is empty")
        elif "\0" in pattern:
            t.error(key, f'the pattern "{shorten(pattern)}" contains a NUL byte')
        elif target != base and base not in target.parents:
            t.error(key, f'"{pattern}" points outside the manifest folder {base}')
        else:
            kept.append(target.relative_to(base).as_posix())
    return tuple(kept)
