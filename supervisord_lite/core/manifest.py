"""Load and validate a manifest: TOML text -> ``model.Manifest``, every problem at once.

One pass builds the model field by field. A bad value becomes a ``Problem``
(naming file, service and key, with line and column when the text shows them) and
the default stands in, so the cross-service rules still run and the user sees
every problem in one go. Any error ends in ``ManifestError``; nothing else escapes
the loader, whatever the input.

Standard library only (plus ``portinfo`` imported lazily for the port warnings of
``check_manifest``).
"""

from __future__ import annotations

import difflib
import enum
import os
import re
import shlex
import signal
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from supervisord_lite.core import graph
from supervisord_lite.core.durations import format_duration, parse_duration, parse_size
from supervisord_lite.core.model import (
    Backoff,
    DependencyRestart,
    ExportSpec,
    Kind,
    Manifest,
    PortRange,
    ProbeSpec,
    RestartPolicy,
    ServiceSpec,
    Status,
    SupervisorSpec,
    Tier,
)

Severity = Literal["error", "warning"]
DEFAULT_TIER = "default"
SERVICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
PLACEHOLDERS = ("name", "port", "state_dir")

SUPERVISOR_KEYS = ("name", "state_dir", "metrics", "probe_interval", "log_max_bytes", "log_backups")
TIER_KEYS = ("order", "ports", "description")
PROBE_KEYS = ("tcp", "http", "exec", "log", "after", "timeout")
BACKOFF_KEYS = ("first", "max", "reset_after")
EXPORT_KEYS = ("image", "build", "command", "env")
EXPORT_DEFAULT_KEYS = ("image", "build", "env")
# An image reference as Docker reads it: [registry[:port]/]path[:tag][@digest], path lowercase.
_IMAGE_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"(?:[A-Za-z0-9.-]+(?::\d+)?/)?{_IMAGE_PATH}(?:/{_IMAGE_PATH})*(?::\w[\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?"
)
SERVICE_KEYS = (
    "tier", "port", "command", "title", "description", "url", "status", "replaced_by", "kind",
    "ready", "ready_timeout", "health", "probe_interval", "unhealthy_threshold", "depends_on",
    "restart", "start_limit", "start_limit_window", "backoff", "failed_retry", "env", "env_file",
    "cwd", "stop_signal", "stop_timeout", "user", "on_dependency_restart", "max_memory", "watch",
    "watch_ignore", "export",
)  # fmt: skip

Path_ = tuple[str, ...]  # a key's path from the document root, e.g. ("services", "api", "port")


# --------------------------------------------------------------------------- problems


def _quote_key(part: str) -> str:
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else '"' + part.replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of validation. ``key`` is relative to the service table when
    ``service`` is set (``"ready.http"``), else the full dotted path (``"supervisor.metrics"``)."""

    severity: Severity
    file: str
    service: str | None
    key: str | None
    message: str
    line: int | None = None
    col: int | None = None

    @property
    def where(self) -> str:
        """The dotted key as written in TOML: ``services.api.ready.http``."""
        if self.service is None:
            return self.key or ""
        head = f"services.{_quote_key(self.service)}"
        return f"{head}.{self.key}" if self.key else head

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        place = self.file
        if self.line is not None:
            place += f":{self.line}" + (f":{self.col}" if self.col is not None else "")
        parts = [place, self.severity, self.where, self.message]
        return ": ".join(p for p in parts if p)


class ManifestError(Exception):
    """The manifest cannot be used. ``problems`` lists every finding (errors first)."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: not p.is_error)
        super().__init__(str(self))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


_KEY_PART = r'(?:"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|[A-Za-z0-9_-]+)'
_DOTTED_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER_LINE = re.compile(rf"\s*\[\[?\s*({_DOTTED_KEY})\s*\]")
_KEY_LINE = re.compile(rf"\s*({_DOTTED_KEY})\s*=")
_INLINE_KEY = re.compile(rf"[{{,]\s*({_KEY_PART})\s*=")


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(_KEY_PART, dotted)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


class _Locator:
    """Line and column of tables and keys, found by scanning the text.

    tomllib does not say where a value came from; this is a best effort that
    knows headers, dotted keys and one level of inline tables.
    """

    def __init__(self, text: str) -> None:
        self._at: dict[Path_, tuple[int, int]] = {}
        header: Path_ = ()
        for lineno, line in enumerate(text.splitlines(), 1):
            if match := _HEADER_LINE.match(line):
                header = _split_key(match.group(1))
                self._add(header, lineno, match.start(1) + 1)
            elif match := _KEY_LINE.match(line):
                full = header + _split_key(match.group(1))
                self._add(full, lineno, match.start(1) + 1)
                rest = line[match.end() :]
                if rest.lstrip().startswith("{"):
                    for inner in _INLINE_KEY.finditer(rest):
                        self._add(full + _split_key(inner.group(1)), lineno, match.end() + inner.start(1) + 1)

    def _add(self, path: Path_, line: int, col: int) -> None:
        for n in range(1, len(path) + 1):
            self._at.setdefault(path[:n], (line, col))

    def find(self, path: Path_) -> tuple[int, int] | tuple[None, None]:
        for n in range(len(path), 0, -1):
            if path[:n] in self._at:
                return self._at[path[:n]]
        return None, None


class _Problems:
    def __init__(self, file: str, locator: _Locator) -> None:
        self.file = file
        self.locator = locator
        self.items: list[Problem] = []

    def add(self, severity: Severity, path: Path_, message: str) -> None:
        if len(path) >= 2 and path[0] == "services":
            service, key = path[1], ".".join(path[2:]) or None
        else:
            service, key = None, ".".join(path) or None
        line, col = self.locator.find(path)
        self.items.append(Problem(severity, self.file, service, key, message, line, col))

    def error(self, path: Path_, message: str) -> None:
        self.add("error", path, message)

    def warning(self, path: Path_, message: str) -> None:
        self.add("warning", path, message)

    @property
    def has_errors(self) -> bool:
        return any(p.is_error for p in self.items)


# --------------------------------------------------------------------------- typed reads


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'the string "{shown}"'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")


class _Table:
    """Typed reads of one TOML table. A bad value is reported and the default returned."""

    def __init__(self, problems: _Problems, path: Path_, data: dict[str, Any], known: Collection[str]) -> None:
        self.problems = problems
        self.path = path
        self.data = data
        for key in data:
            if key not in known:
                hint = _did_you_mean(key, known)
                if not hint:
                    hint = f" (allowed: {', '.join(known)})" if len(known) <= 8 else " (see the manifest reference)"
                problems.error((*path, key), f'unknown key "{key}"{hint}')

    def at(self, key: str) -> Path_:
        return (*self.path, key)

    def error(self, key: str, message: str) -> None:
        self.problems.error(self.at(key), message)

    def _read(self, key: str, default: T, expected: str, convert: Callable[[Any], T]) -> T:
        if key not in self.data:
            return default
        value = self.data[key]
        try:
            return convert(value)
        except (TypeError, ValueError) as exc:
            detail = str(exc)
            self.error(key, detail if detail else f"expected {expected}, got {_describe(value)}")
            return default

    def string(self, key: str, default: str) -> str:
        return self._read(key, default, "a string", _as_str)

    def optional_string(self, key: str) -> str | None:
        return self._read(key, None, "a string", _as_str)

    def boolean(self, key: str, default: bool) -> bool:
        return self._read(key, default, "true or false", _as_bool)

    def integer(self, key: str, default: int, low: int | None = None, high: int | None = None) -> int:
        expected = "an integer" + _bounds(low, high)

        def convert(value: Any) -> int:
            if not _is_int(value):
                raise ValueError(f"expected {expected}, got {_describe(value)}")
            if (low is not None and value < low) or (high is not None and value > high):
                limit = f"outside {low}-{high}" if high is not None else f"below {low}"
                raise ValueError(f"{key} {value} is {limit}")
            return int(value)

        return self._read(key, default, expected, convert)

    def duration(self, key: str, default: float, positive: bool = False) -> float:
        def convert(value: Any) -> float:
            seconds = parse_duration(value)
            if positive and seconds == 0:
                raise ValueError(f"{key} must be more than 0")
            return seconds

        return self._read(key, default, "a duration", convert)

    def size(self, key: str) -> int | None:
        return self._read(key, None, "a size", parse_size)

    def choice(self, key: str, kind: type[E], default: E) -> E:
        allowed = [str(member.value) for member in kind]

        def convert(value: Any) -> E:
            if isinstance(value, str) and value in allowed:
                return kind(value)
            hint = _did_you_mean(value, allowed) if isinstance(value, str) else ""
            raise ValueError(f"expected one of {', '.join(allowed)}, got {_describe(value)}{hint}")

        return self._read(key, default, "", convert)

    def strings(self, key: str) -> tuple[str, ...]:
        def convert(value: Any) -> tuple[str, ...]:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"expected an array of strings, got {_describe(value)}")
            return tuple(value)

        return self._read(key, (), "an array of strings", convert)

    def table(self, key: str) -> dict[str, Any] | None:
        def convert(value: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise ValueError(f"expected a table, got {_describe(value)}")
            return value

        return self._read(key, None, "a table", convert)


def _bounds(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of {low} or more"
    return ""


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_describe(value)}")
    return value


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_describe(value)}")
    return value


# --------------------------------------------------------------------------- values


class _Placeholders:
    """Expands ``{port}``, ``{name}``, ``{state_dir}``; ``{{`` and ``}}`` are literal braces."""

    PATTERN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

    def __init__(self, problems: _Problems, values: Mapping[str, str | None]) -> None:
        self.problems = problems
        self.values = values

    def expand(self, path: Path_, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            token = match.group(0)
            if token in ("{{", "}}"):
                return token[0]
            name = match.group(1)
            if name is None:
                raise ValueError(f'unmatched "{token}" in "{text}"; write "{token * 2}" for a literal brace')
            if name not in self.values:
                hint = _did_you_mean(name, PLACEHOLDERS)
                raise ValueError(
                    f'unknown placeholder "{{{name}}}" in "{text}"{hint} '
                    "(known: {name}, {port}, {state_dir}; write {{ and }} for literal braces)"
                )
            value = self.values[name]
            if value is None:
                raise ValueError(f'"{{{name}}}" is used in "{text}" but the service has no {name}')
            return value

        try:
            return self.PATTERN.sub(replace, text)
        except ValueError as exc:
            self.problems.error(path, str(exc))
            return text


def _escape_braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _split_command(problems: _Problems, path: Path_, value: Any) -> tuple[str, ...] | None:
    """A string split like a shell (never run by one) or an array of strings."""
    if isinstance(value, str):
        try:
            argv = tuple(shlex.split(value))
        except ValueError as exc:
            problems.error(path, f'cannot split "{value}" like a shell: {exc}')
            return None
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        argv = tuple(value)
    else:
        problems.error(path, f"expected a string or an array of strings, got {_describe(value)}")
        return None
    if not argv or not argv[0].strip():
        problems.error(path, "the command is empty")
        return None
    return argv


def _parse_ports(problems: _Problems, path: Path_, value: Any) -> tuple[PortRange, ...]:
    if not isinstance(value, list):
        problems.error(path, f'expected an array of ranges such as ["3000-3099", "8080"], got {_describe(value)}')
        return ()
    ranges = []
    for item in value:
        text = str(item) if _is_int(item) else item
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text) if isinstance(text, str) else None
        if not match:
            problems.error(path, f'expected a port range such as "3000-3099" or a port, got {_describe(item)}')
            continue
        start = int(match.group(1))
        end = int(match.group(2) or start)
        if not (1 <= start <= end <= 65535):
            problems.error(path, f'port range "{item}" must go upwards within 1-65535')
            continue
        ranges.append(PortRange(start, end))
    return tuple(ranges)


def _resolve(base: Path, value: str) -> Path:
    return Path(os.path.normpath(base / value))


def _signal(value: Any) -> signal.Signals:
    if _is_int(value):
        try:
            return signal.Signals(value)
        except ValueError:
            raise ValueError(f"{value} is not a signal number") from None
    if isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return signal.Signals[name]
        except KeyError:
            hint = _did_you_mean(name, [s.name for s in signal.Signals])
            raise ValueError(f'"{value}" is not a signal name{hint}') from None
    raise ValueError(f'expected a signal name such as "SIGTERM" or a number, got {_describe(value)}')


# --------------------------------------------------------------------------- sections


def _supervisor(problems: _Problems, data: Any, path: Path) -> SupervisorSpec:
    default = SupervisorSpec(name=path.stem, state_dir=_resolve(path.parent, ".svc"))
    if data is None:
        return default
    if not isinstance(data, dict):
        problems.error(("supervisor",), f"expected a table, got {_describe(data)}")
        return default
    t = _Table(problems, ("supervisor",), data, SUPERVISOR_KEYS)
    metrics = t.string("metrics", default.metrics)
    if metrics and not _valid_address(metrics):
        t.error("metrics", f'"{metrics}" is not HOST:PORT with a port in 1-65535 (use "" to turn metrics off)')
        metrics = default.metrics
    name = t.string("name", default.name)
    if not name.strip():
        t.error("name", "the name is empty")
        name = default.name
    return SupervisorSpec(
        name=name,
        state_dir=_resolve(path.parent, t.string("state_dir", ".svc")),
        metrics=metrics,
        probe_interval=t.duration("probe_interval", default.probe_interval, positive=True),
        log_max_bytes=t._read("log_max_bytes", default.log_max_bytes, "a size", parse_size),
        log_backups=t.integer("log_backups", default.log_backups, low=0),
    )


def _valid_address(text: str) -> bool:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):(\d{1,5})", text)
    return match is not None and 1 <= int(match.group(2)) <= 65535


def _tiers(problems: _Problems, data: Any) -> dict[str, Tier] | None:
    """The declared tiers sorted by order, or None when the manifest declares none."""
    if data is None or data == {}:
        return None
    if not isinstance(data, dict):
        problems.error(("tiers",), f"expected a table of tiers, got {_describe(data)}")
        return None
    tiers = []
    for name, body in data.items():
        path = ("tiers", name)
        if not isinstance(body, dict):
            problems.error(path, f"expected a table with order, ports, description, got {_describe(body)}")
            continue
        t = _Table(problems, path, body, TIER_KEYS)
        if "order" not in body:
            problems.error(path, 'missing key "order" (an integer: lower tiers start first)')
        ports = _parse_ports(problems, t.at("ports"), body["ports"]) if "ports" in body else ()
        tiers.append(Tier(name, t.integer("order", 0), ports, t.string("description", "")))
    tiers.sort(key=lambda tier: tier.order)  # stable: file order within one order
    return {tier.name: tier for tier in tiers}


def _probe(
    problems: _Problems, path: Path_, data: Any, port: int | None, subst: _Placeholders, liveness: bool
) -> ProbeSpec | None:
    if not isinstance(data, dict):
        problems.error(path, f'expected a table such as {{ http = "/health" }}, got {_describe(data)}')
        return None
    t = _Table(problems, path, data, PROBE_KEYS)
    tcp = t.boolean("tcp", port is not None)
    if tcp and port is None:
        t.error("tcp", "tcp = true needs a port, and the service has none")
        tcp = False
    if "tcp" in data and not tcp and port is not None and not liveness:
        t.error("tcp", "a service with a port is ready only once its port accepts connections; remove tcp = false")
    http = t.optional_string("http")
    if http is not None:
        if not http.startswith("/"):
            t.error("http", f'expected a path starting with "/", such as "/health", got "{http}"')
        elif port is None:
            t.error("http", "an http probe needs a port, and the service has none")
        http = subst.expand(t.at("http"), http)
    exec_ = None
    if "exec" in data:
        argv = _split_command(problems, t.at("exec"), data["exec"])
        exec_ = tuple(subst.expand(t.at("exec"), arg) for arg in argv) if argv else None
    log = t.optional_string("log")
    after = t.duration("after", 0.0) if "after" in data else None
    if liveness:
        for key in ("log", "after"):
            if key in data:
                t.error(key, f"{key} only makes sense for ready; a liveness probe can use tcp, http and exec")
        log = after = None
    elif log is not None:
        try:
            re.compile(log)
        except (re.error, OverflowError, RecursionError) as exc:
            t.error("log", f"invalid regular expression {log!r}: {exc}")
    spec = ProbeSpec(tcp=tcp, http=http, exec=exec_, log=log, after=after, timeout=t.duration("timeout", 2.0, True))
    if liveness and not (spec.tcp or spec.http or spec.exec):
        problems.error(path, "a health probe needs at least one of tcp, http, exec")
    return spec


def _service(
    problems: _Problems,
    name: str,
    data: Any,
    tiers: dict[str, Tier] | None,
    sup: SupervisorSpec,
    base: Path,
    export_defaults: _ExportDefaults | None = None,
) -> ServiceSpec | None:
    path = ("services", name)
    if not SERVICE_NAME.fullmatch(name):
        problems.error(
            path,
            f'"{name}" is not a valid service name: use letters, digits, "_", "." and "-" (not first: "." and "-")',
        )
    if not isinstance(data, dict):
        problems.error(path, f"expected a table of service settings, got {_describe(data)}")
        return None
    t = _Table(problems, path, data, SERVICE_KEYS)

    status = t.choice("status", Status, Status.ACTIVE)
    tier = t.string("tier", DEFAULT_TIER if tiers is None else "")
    if isinstance(data.get("tier", ""), str):  # a wrong type is reported already
        if tiers is None and tier != DEFAULT_TIER:
            t.error("tier", f'unknown tier "{tier}": the manifest declares no [tiers.{tier}] table')
        elif tiers is not None and "tier" not in data:
            problems.error(path, f'missing key "tier" (one of: {", ".join(tiers)})')
        elif tiers is not None and tier not in tiers:
            t.error("tier", f'unknown tier "{tier}"{_did_you_mean(tier, tiers)} (tiers: {", ".join(tiers)})')
    port = (t.integer("port", 0, 1, 65535) or None) if "port" in data else None
    # A bad port is reported once: "{port}" elsewhere must not add "the service has no port".
    port_text = str(port) if port else (str(data["port"]) if "port" in data else None)
    subst = _Placeholders(problems, {"name": name, "port": port_text, "state_dir": str(sup.state_dir)})

    command: tuple[str, ...] = ()
    if "command" in data:
        argv = _split_command(problems, t.at("command"), data["command"])
        command = tuple(subst.expand(t.at("command"), arg) for arg in argv or ())
    elif status is not Status.DEPRECATED:
        problems.error(path, 'missing key "command" (a string such as "uvicorn app:app --port {port}" or an array)')

    env: dict[str, str] = {}
    for key, value in (t.table("env") or {}).items():
        if isinstance(value, (str, int, float)):
            text = str(value).lower() if isinstance(value, bool) else str(value)
            env[key] = subst.expand((*t.at("env"), key), text)
        else:
            problems.error((*t.at("env"), key), f"expected a string or a number, got {_describe(value)}")

    kind = t.choice("kind", Kind, Kind.SERVICE)
    default_restart = RestartPolicy.NO if kind is Kind.ONESHOT else RestartPolicy.ON_FAILURE
    ready = _probe(problems, t.at("ready"), data["ready"], port, subst, liveness=False) if "ready" in data else None
    health = _probe(problems, t.at("health"), data["health"], port, subst, liveness=True) if "health" in data else None

    backoff = Backoff()
    if (raw_backoff := t.table("backoff")) is not None:
        b = _Table(problems, t.at("backoff"), raw_backoff, BACKOFF_KEYS)
        backoff = Backoff(
            first=b.duration("first", backoff.first),
            max=b.duration("max", backoff.max),
            reset_after=b.duration("reset_after", backoff.reset_after),
        )
        if backoff.first > backoff.max:
            b.error("first", f"the first delay ({backoff.first:g}s) is longer than max ({backoff.max:g}s)")

    replaced_by = t.optional_string("replaced_by")
    if replaced_by is not None and status is Status.ACTIVE:
        problems.warning(t.at("replaced_by"), 'replaced_by has no effect unless status = "deprecated"')

    env_file = t.optional_string("env_file")
    export = _export(problems, t, export_defaults or _ExportDefaults(), subst, base)
    watch = _watch_patterns(problems, t, "watch", base)
    watch_ignore = _watch_patterns(problems, t, "watch_ignore", base)

    return ServiceSpec(
        name=name,
        tier=tier,
        command=command,
        port=port,
        title=t.string("title", ""),
        description=t.string("description", ""),
        url=subst.expand(t.at("url"), t.string("url", "")),
        status=status,
        replaced_by=replaced_by,
        kind=kind,
        ready=ready or ProbeSpec(tcp=port is not None),
        ready_timeout=t.duration("ready_timeout", 30.0, positive=True),
        health=health,
        probe_interval=t.duration("probe_interval", sup.probe_interval, positive=True),
        unhealthy_threshold=t.integer("unhealthy_threshold", 3, low=1),
        depends_on=tuple(dict.fromkeys(t.strings("depends_on"))),
        restart=t.choice("restart", RestartPolicy, default_restart),
        start_limit=t.integer("start_limit", 5, low=0),
        start_limit_window=t.duration("start_limit_window", 60.0, positive=True),
        backoff=backoff,
        failed_retry=t.duration("failed_retry", 60.0),
        env=MappingProxyType(env),
        env_file=_resolve(base, env_file) if env_file else None,
        cwd=_resolve(base, t.string("cwd", ".")),
        stop_signal=t._read("stop_signal", signal.SIGTERM, "a signal", _signal),
        stop_timeout=t.duration("stop_timeout", 10.0),
        user=t.optional_string("user"),
        on_dependency_restart=t.choice("on_dependency_restart", DependencyRestart, DependencyRestart.IGNORE),
        max_memory=t.size("max_memory"),
        watch=watch,
        watch_ignore=watch_ignore,
        export=export,
    )


@dataclass(frozen=True, slots=True)
class _ExportDefaults:
    """The top-level ``[export]`` table, placeholders not yet expanded."""

    image: str | None = None
    build: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def _env_table(problems: _Problems, path: Path_, value: Any) -> dict[str, str]:
    """NAME = string, number or boolean (as the service's env); anything else is reported."""
    if not isinstance(value, dict):
        problems.error(path, f"expected a table of NAME = value, got {_describe(value)}")
        return {}
    env = {}
    for key, item in value.items():
        if isinstance(item, (str, int, float)):
            env[key] = str(item).lower() if isinstance(item, bool) else str(item)
        else:
            problems.error((*path, key), f"expected a string or a number, got {_describe(item)}")
    return env


def _export_defaults(problems: _Problems, data: Any) -> _ExportDefaults:
    """The top-level ``[export]``: image, build and env every service starts from.

    It serves every service, so only ``{name}`` and ``{state_dir}`` may appear in it.
    """
    if data is None:
        return _ExportDefaults()
    if not isinstance(data, dict):
        example = '{ image = "team/{name}:latest" }'
        problems.error(("export",), f"expected a table such as {example}, got {_describe(data)}")
        return _ExportDefaults()
    t = _Table(problems, ("export",), data, EXPORT_DEFAULT_KEYS)
    defaults = _ExportDefaults(
        image=t.optional_string("image"),
        build=t.optional_string("build"),
        env=MappingProxyType(_env_table(problems, t.at("env"), data["env"]) if "env" in data else {}),
    )
    values = [(t.at(key), text) for key in ("image", "build") if (text := getattr(defaults, key))]
    values += [((*t.at("env"), key), text) for key, text in defaults.env.items()]
    for path, text in values:
        if re.search(r"(?<!\{)\{port\}", text):
            problems.error(
                path,
                f'"{{port}}" in "{text}" differs per service and some have none; '
                "use {name}, or set it in [services.NAME.export]",
            )
        else:
            _Placeholders(problems, {"name": "name", "state_dir": "state_dir"}).expand(path, text)
    return defaults


def _export(
    problems: _Problems, t: _Table, defaults: _ExportDefaults, subst: _Placeholders, base: Path
) -> ExportSpec:
    """``[services.NAME.export]`` over the top-level ``[export]``.

    A service that sets image or build takes neither from the top level: mixing one
    service's image with everyone's build context would build the wrong thing. Its
    env goes over the top-level env.
    """
    raw = t.table("export")
    path = t.at("export")
    e = _Table(problems, path, raw, EXPORT_KEYS) if raw is not None else None
    own = {key: value for key in ("image", "build") if e and (value := e.optional_string(key)) is not None}
    inherited = not own
    origin = " (from the top-level [export])" if inherited else ""

    def quietly(text: str) -> str:
        """A top-level value for this service; its problems were reported at the top level."""
        return _Placeholders(_Problems(problems.file, problems.locator), subst.values).expand((), text)

    def value(key: str) -> str | None:
        if not inherited:
            text = own.get(key)
            return None if text is None else subst.expand((*path, key), text)
        text = getattr(defaults, key)
        return None if text is None else quietly(text)

    image = value("image")
    if image is not None and not IMAGE_REFERENCE.fullmatch(image):
        problems.error(
            (*path, "image"),
            f'"{image}"{origin} is not an image reference such as "postgres:16" or '
            '"registry.example.com/team/app:1.2" (lowercase, no spaces)',
        )
    build = None
    if (context := value("build")) is not None:
        if context.strip():
            build = _resolve(base, context)
        else:
            problems.error((*path, "build"), f"the build context{origin} is empty")

    command: tuple[str, ...] | None = None
    env = {key: quietly(text) for key, text in defaults.env.items()}
    if raw is not None:
        if "command" in raw:
            if raw["command"] in ("", []):
                command = ()  # the image's own command
            else:
                argv = _split_command(problems, (*path, "command"), raw["command"])
                command = tuple(subst.expand((*path, "command"), arg) for arg in argv or ())
        if "env" in raw:
            own_env = _env_table(problems, (*path, "env"), raw["env"])
            env |= {key: subst.expand((*path, "env", key), text) for key, text in own_env.items()}
    return ExportSpec(image=image, build=build, command=command, env=MappingProxyType(env))


def _watch_patterns(problems: _Problems, t: _Table, key: str, base: Path) -> tuple[str, ...]:
    """Glob patterns relative to the manifest folder; one that leaves it is an error."""
    kept = []
    for pattern in t.strings(key):
        target = Path(os.path.normpath(base / pattern))
        if not pattern.strip():
            t.error(key, "a watch pattern is empty")
        elif target != base and base not in target.parents:
            t.error(key, f'"{pattern}" points outside the manifest folder {base}')
        else:
            kept.append(target.relative_to(base).as_posix())
    return tuple(kept)


# --------------------------------------------------------------------------- cross-service rules


Services = Mapping[str, ServiceSpec]


def _rule_unique_ports(problems: _Problems, services: Services, tiers: Mapping[str, Tier]) -> None:
    owner: dict[int, ServiceSpec] = {}
    for spec in services.values():
        if spec.port is None:
            continue
        first = owner.setdefault(spec.port, spec)
        if first is not spec:
            kept = " (a deprecated service keeps its port reserved)" if first.status is Status.DEPRECATED else ""
            problems.error(("services", spec.name, "port"), f"port {spec.port} is already taken by {first.name}{kept}")


def _rule_ports_in_tier(problems: _Problems, services: Services, tiers: Mapping[str, Tier]) -> None:
    for spec in services.values():
        tier = tiers.get(spec.tier)
        if spec.port is not None and tier is not None and not tier.allows(spec.port):
            ranges = ", ".join(str(r) for r in tier.ports)
            problems.error(
                ("services", spec.name, "port"),
                f"port {spec.port} is outside the ranges of tier {tier.name} ({ranges})",
            )


def _rule_known_dependencies(problems: _Problems, services: Services, tiers: Mapping[str, Tier]) -> None:
    for spec in services.values():
        for dep in spec.depends_on:
            if dep not in services:
                problems.error(
                    ("services", spec.name, "depends_on"),
                    f'depends on "{dep}", but no service has that name{_did_you_mean(dep, services)}',
                )


def _rule_no_cycles(problems: _Problems, services: Services, tiers: Mapping[str, Tier]) -> None:
    for cycle in graph.find_cycles({name: spec.depends_on for name, spec in services.items()}):
        problems.error(("services", cycle[0], "depends_on"), f"dependency cycle: {graph.format_cycle(cycle)}")


def _rule_no_tier_inversion(problems: _Problems, services: Services, tiers: Mapping[str, Tier]) -> None:
    for spec in services.values():
        own = tiers.get(spec.tier)
        for dep in spec.depends_on:
            other = services.get(dep)
            theirs = tiers.get(other.tier) if other else None
            if own and theirs and theirs.order > own.order:
                problems.error(
                    ("services", spec.name, "depends_on"),
                    f"{spec.name} (tier {own.name}, order {own.order}) depends on {dep} of the later tier "
                    f"{theirs.name} (order {theirs.order}); a service can only depend on its own or earlier tiers",
                )


def _rule_active_needs_active(problems: _Problems, services: Services, tiers: Mapping[str, Tier]) -> None:
    for spec in services.values():
        if not spec.is_active:
            continue
        for dep in spec.depends_on:
            other = services.get(dep)
            if other is None or other.is_active:
                continue
            if other.status is Status.DEPRECATED:
                successor = services.get(other.replaced_by) if other.replaced_by else None
                usable = successor is not None and successor.is_active and successor.name != spec.name
                instead = f'; depend on "{successor.name}" instead' if usable and successor else ""
                why = f"which is deprecated and never starts{instead}"
            else:
                why = 'which is disabled; set its status = "active" or drop the dependency'
            problems.error(("services", spec.name, "depends_on"), f"depends on {dep}, {why}")


def _rule_replacements_exist(problems: _Problems, services: Services, tiers: Mapping[str, Tier]) -> None:
    for spec in services.values():
        target = spec.replaced_by
        if target is None:
            continue
        path = ("services", spec.name, "replaced_by")
        if target == spec.name:
            problems.error(path, "a service cannot replace itself")
        elif target not in services:
            problems.error(path, f'"{target}" names no service{_did_you_mean(target, services)}')


def _rule_metrics_port_is_not_a_service_port(problems: _Problems, services: Services, sup: SupervisorSpec) -> None:
    try:
        address = sup.metrics_address
    except ValueError:  # a malformed address is reported by the [supervisor] checks
        return
    if address is None:
        return
    for spec in services.values():
        if spec.port == address[1]:
            problems.error(
                ("services", spec.name, "port"),
                f"port {spec.port} is the supervisor's own metrics port (supervisor.metrics = \"{sup.metrics}\")",
            )


RULES: tuple[Callable[[_Problems, Services, Mapping[str, Tier]], None], ...] = (
    _rule_unique_ports,
    _rule_ports_in_tier,
    _rule_known_dependencies,
    _rule_no_cycles,
    _rule_no_tier_inversion,
    _rule_active_needs_active,
    _rule_replacements_exist,
)


# --------------------------------------------------------------------------- public API


def _syntax_problem(file: str, text: str, exc: tomllib.TOMLDecodeError) -> Problem:
    message = str(exc)
    line = col = None
    if match := re.search(r"\s*\(at line (\d+), column (\d+)\)$", message):
        line, col = int(match.group(1)), int(match.group(2))
        message = message[: match.start()]
    elif match := re.search(r"\s*\(at end of document\)$", message):
        line = text.count("\n") + 1
        message = message[: match.start()] + " at the end of the file"
    return Problem("error", file, None, None, f"invalid TOML: {message}", line, col)


def analyse(text: str, path: Path) -> tuple[Manifest | None, list[Problem]]:
    """Build the manifest and list every problem; the manifest is None when any is an error."""
    file = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [_syntax_problem(file, text, exc)]
    problems = _Problems(file, _Locator(text))
    base = Path(os.path.normpath(path.absolute().parent))
    _Table(problems, (), data, ("supervisor", "tiers", "services", "export"))
    sup = _supervisor(problems, data.get("supervisor"), base / path.name)
    declared = _tiers(problems, data.get("tiers"))
    tiers = declared if declared is not None else {DEFAULT_TIER: Tier(DEFAULT_TIER, 0)}
    export_defaults = _export_defaults(problems, data.get("export"))

    raw_services = data.get("services", {})
    services: dict[str, ServiceSpec] = {}
    if not isinstance(raw_services, dict):
        problems.error(("services",), f"expected a table of [services.NAME] tables, got {_describe(raw_services)}")
    else:
        for name, body in raw_services.items():
            if (spec := _service(problems, name, body, declared, sup, base, export_defaults)) is not None:
                services[name] = spec
        if not raw_services:
            problems.warning(("services",), "no services: add [services.NAME] tables (or use svc add)")
    for rule in RULES:
        rule(problems, services, tiers)
    _rule_metrics_port_is_not_a_service_port(problems, services, sup)

    found = sorted(problems.items, key=lambda p: (not p.is_error, p.line if p.line is not None else 1 << 30))
    if problems.has_errors:
        return None, found
    manifest = Manifest(
        path=base / path.name,
        supervisor=sup,
        tiers=MappingProxyType(tiers),
        services=MappingProxyType(services),
    )
    return manifest, found


def parse_manifest(text: str, path: Path) -> Manifest:
    """The manifest in ``text``; ``path`` names it in messages and anchors relative paths.

    :raises ManifestError: with every problem found.
    """
    manifest, problems = analyse(text, path)
    if manifest is None:
        raise ManifestError(problems)
    return manifest


def read_manifest_text(path: Path) -> str:
    """The manifest file's text. :raises ManifestError: missing, unreadable or not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        message = "no such manifest file (give one with -f PATH, $SVC_MANIFEST, or create ./svc.toml)"
    except IsADirectoryError:
        message = "is a directory, not a manifest file"
    except UnicodeDecodeError as exc:
        message = f"is not UTF-8 text ({exc.reason} at byte {exc.start})"
    except OSError as exc:
        message = f"cannot be read: {exc.strerror or exc}"
    raise ManifestError([Problem("error", str(path), None, None, message)])


def load_manifest(path: Path) -> Manifest:
    """Read and validate the manifest file. :raises ManifestError: with every problem found."""
    return parse_manifest(read_manifest_text(path), path)


def env_file_warnings(m: Manifest) -> list[Problem]:
    """A missing env_file is only a warning here: the file may be created before start."""
    return [
        Problem("warning", str(m.path), spec.name, "env_file", f"{spec.env_file} does not exist (yet)")
        for spec in m.services.values()
        if spec.env_file is not None and not spec.env_file.exists()
    ]


def one_line(text: str) -> str:
    """Control characters shown as escapes, so a command line stays on one output line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def locate(problems: Iterable[Problem], path: Path, text: str) -> list[Problem]:
    """The problems found on a loaded manifest (which knows only its absolute path),
    named like the loader's: the file as the user gave it, with the line and column
    of the key when the text shows them."""
    locator = _Locator(text)
    out = []
    for problem in problems:
        if problem.line is None:
            where: Path_ = tuple(problem.key.split(".")) if problem.key else ()
            if problem.service is not None:
                where = ("services", problem.service, *where)
            line, col = locator.find(where) if where else (None, None)
            problem = replace(problem, file=str(path), line=line, col=col)
        out.append(problem)
    return out


def check_manifest(
    path: Path, *, live_checks: Callable[[Manifest], list[Problem]] | None = None
) -> tuple[Manifest | None, list[Problem]]:
    """Everything ``svc check`` reports: errors, then warnings (missing env files, and
    whatever ``live_checks`` finds on this machine, such as ports already in use)."""
    try:
        text = read_manifest_text(path)
        manifest, problems = analyse(text, path)
    except ManifestError as exc:
        return None, exc.problems
    if manifest is not None:
        extra = env_file_warnings(manifest)
        if live_checks is not None:
            extra += live_checks(manifest)
        problems = problems + locate(extra, path, text)
    return manifest, sorted(problems, key=lambda p: not p.is_error)


# --------------------------------------------------------------------------- back to TOML


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
        "cwd": str(spec.cwd),
    }
    if spec.env_file is not None:
        out["env_file"] = str(spec.env_file)
    out |= {
        "stop_signal": spec.stop_signal.name,
        "stop_timeout": format_duration(spec.stop_timeout),
        "on_dependency_restart": spec.on_dependency_restart.value,
    }
    if spec.user is not None:
        out["user"] = spec.user
    if spec.max_memory is not None:
        out["max_memory"] = spec.max_memory
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
        },
        "tiers": {
            tier.name: {"order": tier.order, "ports": [str(r) for r in tier.ports], "description": tier.description}
            for tier in m.tiers.values()
        },
        "services": {name: service_to_dict(spec) for name, spec in m.services.items()},
    }
