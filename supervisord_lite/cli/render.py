"""Pure formatters for what the CLI prints: snapshots in, text out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
    elif s.state is ServiceState.READY and s.reason:  # "ready (restarted: src/app.py changed)"
        text += f" ({s.reason})"
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
    return reason_says_state(s.state.value, s.reason)


def reason_says_state(state: str, reason: str) -> bool:
    """``says_state`` of a state and reason as the daemon sent them."""
    return reason.startswith(f"{state} ")


def progress_line(s: ServiceSnapshot) -> str:
    """One line per state change for `svc up` on a non-terminal."""
    return progress_text(s.name, s.state, s.reason, s.ready_duration, s.port)


def progress_text(name: str, state: str, reason: str, ready_duration: float | None, port: int | None) -> str:
    """``progress_line`` from the fields it shows: `svc up` writes it from each service as
    the daemon sent it, without building a snapshot for every update."""
    if reason and reason_says_state(state, reason):
        return f"{name}: {reason}"
    line = f"{name}: {state}"
    if state == ServiceState.READY and ready_duration is not None:
        line += f" in {ready_duration:.2f}s"
        if port:
            line += f" (port {port})"
    elif reason:
        line += f" ({reason})"
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


def ready_count_line(states: Sequence[str]) -> str:
    """``3/4 services ready``, of the services' states: the last line of `svc up` and `svc restart`."""
    good = sum(1 for state in states if state in GOOD_STATES)
    return f"{good}/{len(states)} services ready" if states else "nothing to start"


#: `svc status` columns that may be left out, most wanted first; the others always stay.
STATUS_PRIORITY = ("URL", "PID", "UPTIME", "RESTARTS", "TIER", "HEALTH")


@dataclass(frozen=True, slots=True)
class ColumnFit:
    """Which columns a table shows and how wide each is.

    ``shown`` are indexes in the header's order, ``widths`` their widths (same order),
    ``left_out`` the names of the columns that did not fit."""

    shown: list[int]
    widths: list[int]
    left_out: list[str]


def fit_columns(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int | None,
    priority: Sequence[str],
    *,
    flexible: Sequence[str] = (),
    min_flexible: int = 16,
    gap: int = 2,
) -> ColumnFit:
    """Fit a table in ``width`` columns without cutting what matters.

    Columns not named in ``priority`` are required: they keep their widest value,
    and when even they do not fit, only the first one (the name) is cut, with an
    ellipsis. The optional columns are then added in ``priority`` order (most wanted
    first) while they fit whole; one that does not fit is skipped and the next ones
    are still tried. A ``flexible`` column (free text: a reason) needs only
    ``min_flexible`` to be added, and gets what is left over, up to its widest value.
    Every column shows when ``width`` is None.

    Both `svc status` and `svc status --watch` fit their tables with it; ``gap`` is
    what rich puts between two columns (one space of padding on each side)."""
    natural = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    if width is None:
        return ColumnFit(list(range(len(header))), natural, [])
    index = {name: i for i, name in enumerate(header)}
    wanted = [index[name] for name in priority if name in index]
    required = [i for i in range(len(header)) if i not in wanted]
    widths = {i: natural[i] for i in required}
    used = sum(widths.values()) + gap * max(len(required) - 1, 0)
    if used > width and required:
        first = required[0]
        widths[first] = max(natural[first] - (used - width), 1)
        used = width
    else:
        for i in wanted:
            need = min(natural[i], min_flexible) if header[i] in flexible else natural[i]
            if used + gap + need <= width:
                widths[i] = need
                used += gap + need
        for i in wanted:
            if i in widths and header[i] in flexible:
                grow = min(natural[i] - widths[i], width - used)
                widths[i] += grow
                used += grow
    shown = sorted(widths)
    return ColumnFit(shown, [widths[i] for i in shown], [header[i] for i in range(len(header)) if i not in widths])


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
    """``config/x.toml: 12 services, no problems`` or ``config/x.toml: 2 errors, 1 warning``;
    problems of another file (svc.local.toml, a -f file, .env) are counted under its name:
    ``svc.toml: 1 error; svc.local.toml: 2 errors``, ``svc.local.toml: 1 error (merged over svc.toml)``."""
    main = path.resolve()
    by_file: dict[str, list[Problem]] = {}
    for problem in problems:
        by_file.setdefault(problem.file, []).append(problem)
    own = [p for file, found in by_file.items() if Path(file).resolve() == main for p in found]
    others = [(file, found) for file, found in by_file.items() if Path(file).resolve() != main]
    parts = [plural(len(manifest.services), "service")] if manifest is not None else []
    parts += _problem_counts(own)
    if not problems:
        parts.append("no problems")
    segments = [f"{path}: {', '.join(parts)}"] if parts else []
    segments += [f"{file}: {', '.join(_problem_counts(found))}" for file, found in others]
    return "; ".join(segments) + ("" if parts else f" (merged over {path})")


def _problem_counts(problems: Sequence[Problem]) -> list[str]:
    errors = sum(p.is_error for p in problems)
    warnings = len(problems) - errors
    return ([plural(errors, "error")] if errors else []) + ([plural(warnings, "warning")] if warnings else [])


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
