"""Pure formatters for what the CLI prints: snapshots in, text out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from supervisord_lite.core.states import GOOD_STATES, ServiceState

if TYPE_CHECKING:
    from supervisord_lite.core.snapshot import ServiceSnapshot, SupervisorSnapshot
    from supervisord_lite.core.problems import Problem
    from supervisord_lite.core.model import Manifest

STATUS_COLUMNS = ("SERVICE", "TIER", "PORT", "STATE", "PID", "UPTIME", "RESTARTS", "HEALTH", "URL")

STATE_STYLE = {
    ServiceState.READY: "green",
    ServiceState.EXITED: "green",
    ServiceState.STARTING: "yellow",
    ServiceState.WAITING: "yellow",
    ServiceState.BACKOFF: "yellow",
    ServiceState.UNHEALTHY: "red",
    ServiceState.FAILED: "bold red",
    ServiceState.CONFLICT: "bold red",
    ServiceState.STOPPING: "yellow",
    ServiceState.STOPPED: "dim",
    ServiceState.DISABLED: "dim",
    ServiceState.DEPRECATED: "dim strike",
}


def human_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def health(s: ServiceSnapshot) -> str:
    if s.port is None:
        return "-"
    if s.port_up is None:
        return "-"
    if s.port_up:
        latency = f" {s.probe_latency * 1000:.1f}ms" if s.probe_latency is not None else ""
        return f"up{latency}"
    return "down"


def state_text(s: ServiceSnapshot, now: float) -> str:
    text = s.state.value
    if s.paused:
        text += " (paused: stopped by a signal)"
    elif s.state is ServiceState.WAITING and s.blocked_by:
        text += f" ({', '.join(s.blocked_by)})"
    elif s.state in (ServiceState.BACKOFF, ServiceState.FAILED) and s.next_retry_at:
        text += f" (retry in {human_duration(max(0.0, s.next_retry_at - now))})"
    elif s.state is ServiceState.CONFLICT and s.conflict_pid:
        text += f" (pid {s.conflict_pid})"
    elif s.state is ServiceState.DEPRECATED and s.replaced_by:
        text += f" (→ {s.replaced_by})"
    return text


def status_rows(snapshot: SupervisorSnapshot, now: float) -> list[tuple[str, ...]]:
    rows = []
    for s in snapshot.services:
        uptime = now - s.started_at if s.pid and s.started_at else None
        rows.append(
            (
                s.name,
                s.tier,
                str(s.port) if s.port else "-",
                state_text(s, now),
                str(s.pid) if s.pid else "-",
                human_duration(uptime),
                str(s.restarts),
                health(s),
                s.url or "-",
            )
        )
    return rows


def plain_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [tuple(header), *map(tuple, rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def says_state(s: ServiceSnapshot) -> bool:
    """True when the reason already starts with the state (``waiting for db``, ``exited with code 0``),
    so printing both would stutter (``waiting (waiting for db)``)."""
    return s.reason.startswith(f"{s.state.value} ")


def progress_line(s: ServiceSnapshot) -> str:
    """One line per state change for `svc up` on a non-terminal."""
    if s.reason and says_state(s):
        return f"{s.name}: {s.reason}"
    line = f"{s.name}: {s.state.value}"
    if s.state is ServiceState.READY and s.ready_duration is not None:
        line += f" in {s.ready_duration:.2f}s"
        if s.port:
            line += f" (port {s.port})"
    elif s.reason:
        line += f" ({s.reason})"
    return line


#: States in which nothing of the service ran for this request: its log is from an earlier run.
_NOT_SPAWNED = (ServiceState.WAITING, ServiceState.CONFLICT)


def failure_report(services: Sequence[ServiceSnapshot], tails: dict[str, list[str]]) -> str:
    """What failed and why, with the last log lines of each service that ran and failed."""
    bad = [s for s in services if s.state not in GOOD_STATES]
    out = []
    for s in bad:
        if s.state is ServiceState.CONFLICT and s.conflict_pid:
            out.append(f"✗ {s.name}: conflict: port {s.port} is held by pid {s.conflict_pid}: {s.conflict_cmdline}")
            out.append(f"  (not ours, so not touched; stop it, or change {s.name}'s port, then `svc up {s.name}`)")
        elif s.reason and says_state(s):
            out.append(f"✗ {s.name}: {s.reason}")
        else:
            out.append(f"✗ {s.name}: {s.state.value}" + (f": {s.reason}" if s.reason else ""))
        if s.state in _NOT_SPAWNED:
            continue
        lines = tails.get(s.name) or []
        if lines:
            out.append(f"  last {len(lines)} log lines:")
            out.extend(f"    {line}" for line in lines)
    return "\n".join(out)


def ready_count_line(services: Sequence[ServiceSnapshot]) -> str:
    """``3/4 services ready``: the last line of `svc up` and `svc restart`."""
    good = sum(1 for s in services if s.state in GOOD_STATES)
    return f"{good}/{len(services)} services ready" if services else "nothing to start"


#: `svc status` columns, least needed first, dropped whole when the terminal is narrow.
STATUS_DROP_ORDER = ("HEALTH", "TIER", "RESTARTS", "UPTIME", "PID", "URL")


def fit_columns(
    header: Sequence[str], rows: Sequence[Sequence[str]], width: int | None, drop_order: Sequence[str], gap: int = 2
) -> list[int]:
    """Indexes of the columns that fit in ``width`` without cutting a cell, dropping
    whole columns in ``drop_order``; every column when ``width`` is None.

    Both `svc status` and `svc status --watch` fit their tables with it; ``gap`` is
    what rich puts between two columns (one space of padding on each side)."""
    natural = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    shown = list(range(len(header)))
    if width is None:
        return shown
    for name in drop_order:
        if sum(natural[i] for i in shown) + gap * (len(shown) - 1) <= width:
            break
        if name in header:
            shown.remove(header.index(name))
    return shown


def attention_lines(services: Sequence[ServiceSnapshot]) -> list[str]:
    """Why each service that needs a person's attention is where it is."""
    wanted = (ServiceState.FAILED, ServiceState.CONFLICT, ServiceState.UNHEALTHY, ServiceState.BACKOFF)
    out = []
    for s in services:
        if s.state in wanted and s.reason:
            out.append(f"{s.name}: {s.reason}")
        elif s.state is ServiceState.CONFLICT and s.conflict_pid:
            out.append(f"{s.name}: port {s.port} is held by pid {s.conflict_pid}: {s.conflict_cmdline}")
    return out


def manifest_summary_line(path: Path, manifest: Manifest | None, problems: list[Problem]) -> str:
    """``config/x.toml: 12 services, no problems`` or ``config/x.toml: 2 errors, 1 warning``."""
    errors = sum(p.is_error for p in problems)
    warnings = len(problems) - errors
    parts = [plural(len(manifest.services), "service")] if manifest is not None else []
    if errors:
        parts.append(plural(errors, "error"))
    if warnings:
        parts.append(plural(warnings, "warning"))
    if not problems:
        parts.append("no problems")
    return f"{path}: {', '.join(parts)}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
