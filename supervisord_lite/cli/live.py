"""``svc status --watch``: the daemon's live state, as it changes.

On a terminal: a full-screen rich table (service, tier, port, state in its colour,
the reason for it, uptime, restarts, probe latency, CPU, memory, URL), failing
services first, and a footer with the count of services per state. It is fitted
to the window: service, port and state are never cut while they fit, the other
columns come in PRIORITY order while they fit, and rows that do not fit are
counted on a line of their own. It is redrawn when the daemon says a state
changed (the control socket's ``watch`` stream), and every second for the
uptimes. Ctrl-C ends it and gives the terminal back as it was.

Elsewhere (a pipe, a file): one line per state change, like ``tail -f``, each
with a timestamp, starting with one line per service for the current state.

If the daemon goes away mid-watch (``svc shutdown`` then ``svc up``), the watch
says so and reconnects once it is back; only a daemon absent at the start is an
error (exit 3, as ``svc status``).

The pure parts (``order_services``, ``status_table``, ``footer``, ``change_lines``,
``reason_text``; ``CpuTracker`` lives in core.cpurate) take snapshots and return renderables or text; ``run_watch`` does
the I/O.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from supervisord_lite.cli import client
from supervisord_lite.cli.render import STATE_STYLE, fit_columns, human_duration, says_state, state_text
from supervisord_lite.core.cpurate import CpuTracker
from supervisord_lite.core.exitcodes import ExitCode
from supervisord_lite.core.protocol import ControlError, DaemonUnreachable
from supervisord_lite.core.snapshot import ServiceSnapshot, SupervisorSnapshot
from supervisord_lite.core.states import ServiceState

RECONNECT_SECONDS = 1.0

S = ServiceState
#: Sort rank: what needs a look first, what is fine next, what is off last.
SEVERITY: dict[ServiceState, int] = {
    S.FAILED: 0,
    S.CONFLICT: 0,
    S.UNHEALTHY: 1,
    S.BACKOFF: 1,
    S.WAITING: 2,
    S.STARTING: 2,
    S.STOPPING: 2,
    S.READY: 3,
    S.EXITED: 3,
    S.STOPPED: 4,
    S.DISABLED: 5,
    S.DEPRECATED: 5,
}
#: The order of the footer's counts.
STATE_ORDER = sorted(ServiceState, key=lambda s: (SEVERITY[s], list(ServiceState).index(s)))
COLUMNS = ("SERVICE", "TIER", "PORT", "STATE", "REASON", "UPTIME", "RESTARTS", "PROBE", "CPU", "MEM", "URL")
#: The columns that may be left out, most wanted first: each is added while it fits
#: whole. SERVICE, PORT and STATE always stay; REASON (free text) is cut to fit.
PRIORITY = ("CPU", "MEM", "REASON", "RESTARTS", "UPTIME", "PROBE", "TIER", "URL")
NUMERIC = ("PORT", "UPTIME", "RESTARTS", "PROBE", "CPU", "MEM")
#: Lines around the table's rows: title, header, the blank line and the footer.
FRAME_LINES = 4


# ----------------------------------------------------------------------------- pure


def order_services(services: Sequence[ServiceSnapshot]) -> list[ServiceSnapshot]:
    """Failing ones first, then starting, then fine, then off; the daemon's order within."""
    return sorted(services, key=lambda s: SEVERITY.get(s.state, 2))


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def reason_text(s: ServiceSnapshot, now: float) -> str:
    """Why a service is in its state, without saying the state again: the REASON column
    (``retry in 3s: exited with code 1``, ``for db, redis``, ``held by pid 42: nginx``)."""
    parts = []
    if s.paused:
        parts.append("paused: stopped by a signal")
    if s.state in (S.BACKOFF, S.FAILED) and s.next_retry_at:
        parts.append(f"retry in {human_duration(max(0.0, s.next_retry_at - now))}")
    if s.state is S.CONFLICT and s.conflict_pid:
        parts.append(f"held by pid {s.conflict_pid}" + (f": {s.conflict_cmdline}" if s.conflict_cmdline else ""))
    elif s.state is S.DEPRECATED and s.replaced_by:
        parts.append(f"→ {s.replaced_by}")
    elif s.reason:
        parts.append(s.reason[len(s.state.value) + 1 :] if says_state(s) else s.reason)
    elif s.state is S.WAITING and s.blocked_by:
        parts.append(f"for {', '.join(s.blocked_by)}")
    return ": ".join(parts)


def _cells(s: ServiceSnapshot, now: float, cpu: Mapping[str, float]) -> dict[str, str]:
    running = s.pid is not None and s.started_at is not None
    probe = "-"
    if s.port is not None and s.port_up is not None:
        probe = "down" if not s.port_up else f"{s.probe_latency * 1000:.1f}ms" if s.probe_latency is not None else "up"
    percent = cpu.get(s.name)
    return {
        "SERVICE": s.name,
        "TIER": s.tier,
        "PORT": str(s.port) if s.port is not None else "-",
        "STATE": s.state.value + (" (paused)" if s.paused else ""),
        "REASON": reason_text(s, now) or "-",
        "UPTIME": human_duration(now - s.started_at) if running and s.started_at is not None else "-",
        "RESTARTS": str(s.restarts),
        "PROBE": probe,
        "CPU": f"{percent:.1f}%" if running and percent is not None else "-",
        "MEM": human_bytes(s.rss_bytes) if running else "-",
        "URL": s.url or "-",
    }


def footer(snap: SupervisorSnapshot, *, note: str = "") -> Text:
    """``3 ready · 1 backoff · 1 failed`` in the states' colours, plus a note."""
    counts: dict[ServiceState, int] = {}
    for s in snap.services:
        counts[s.state] = counts.get(s.state, 0) + 1
    text = Text(no_wrap=True, overflow="ellipsis")
    for state in STATE_ORDER:
        if counts.get(state):
            if text:
                text.append(" · ", style="dim")
            text.append(f"{counts[state]} {state.value}", style=STATE_STYLE.get(state, ""))
    if not snap.services:
        text.append("no services", style="dim")
    if note:
        text.append(f"   {note}", style="dim")
    return text


def _line(text: str, style: str = "") -> Text:
    """One screen line whatever the width: cut with an ellipsis, never wrapped."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def status_table(
    snap: SupervisorSnapshot,
    now: float,
    cpu: Mapping[str, float],
    *,
    title: str = "",
    max_rows: int | None = None,
    height: int | None = None,
    note: str = "",
    width: int | None = None,
) -> Group:
    """The watch screen: a title line, the table (failing first) and the footer.

    With ``width`` (the terminal's), SERVICE, PORT and STATE keep their widest value
    and the other columns are added in PRIORITY order while they fit (see
    ``fit_columns``); a last line names those left out. With ``height``, every line
    of the screen is counted: when the services do not all fit, the last row says
    how many are hidden instead of the screen cutting them off (``max_rows`` sets
    the rows directly). The REASON column shows only when some service has one.
    """
    services = order_services(snap.services)
    cells = [_cells(s, now, cpu) for s in services]
    columns = [c for c in COLUMNS if c != "REASON" or any(row["REASON"] != "-" for row in cells)]
    rows = [[row[c] for c in columns] for row in cells]
    fit = fit_columns(columns, rows, width, PRIORITY, flexible=("REASON",))
    if height is not None:
        max_rows = height - FRAME_LINES + (0 if title else 1) - (1 if fit.left_out else 0)
    hidden: list[ServiceSnapshot] = []
    if max_rows is not None and len(services) > max_rows:
        keep = max(max_rows - 1, 0)
        services, hidden, rows = services[:keep], services[keep:], rows[:keep]

    table = Table(box=None, pad_edge=False, expand=False)
    for i, w in zip(fit.shown, fit.widths):
        col = columns[i]
        table.add_column(col, no_wrap=True, overflow="ellipsis", justify="right" if col in NUMERIC else "left",
                         width=w if width is not None else None)
    for s, row in zip(services, rows):
        style = STATE_STYLE.get(s.state, "")
        table.add_row(*(Text(row[i], style=style if columns[i] == "STATE" else "") for i in fit.shown))
    parts: list[Any] = [_line(title, "bold")] if title else []
    parts.append(table)
    if hidden:
        states = ", ".join(sorted({s.state.value for s in hidden}, key=lambda v: SEVERITY[ServiceState(v)]))
        parts.append(_line(f"… {len(hidden)} more ({states}), resize or use svc status", "dim"))
    parts += ["", footer(snap, note=note)]
    if fit.left_out:
        parts.append(_line(f"too narrow for {', '.join(fit.left_out)}", "dim"))
    return Group(*parts)


def _change_key(s: ServiceSnapshot) -> tuple[Any, ...]:
    return (s.state, s.reason, s.blocked_by, s.conflict_pid)


def change_line(s: ServiceSnapshot, now: float) -> str:
    """``api: ready in 0.31s (port 8000)``, ``api: backoff (retry in 2s): exited with code -9``."""
    if s.reason and says_state(s) and s.state is not ServiceState.CONFLICT:
        return f"{s.name}: {s.reason}"  # "db: waiting for x (failed)", not "db: waiting (x): waiting for x ..."
    line = f"{s.name}: {state_text(s, now)}"
    if s.state is ServiceState.READY:
        if s.ready_duration is not None:
            line += f" in {s.ready_duration:.2f}s"
        details = [f"port {s.port}"] if s.port else []
        if s.pid:
            details.append(f"pid {s.pid}")
        if s.restarts:
            details.append(f"{s.restarts} restart{'s' if s.restarts != 1 else ''}")
        if details:
            line += f" ({', '.join(details)})"
    elif s.state is ServiceState.CONFLICT and s.conflict_cmdline:
        line += f": port {s.port} held by {s.conflict_cmdline}"
    elif s.reason:
        line += f": {s.reason}"
    return line


def change_lines(
    previous: Mapping[str, tuple[Any, ...]], snap: SupervisorSnapshot, now: float
) -> tuple[list[str], dict[str, tuple[Any, ...]]]:
    """The lines for what changed since ``previous`` (per-service keys), and the new keys."""
    stamp = datetime.fromtimestamp(now).isoformat(timespec="seconds")
    lines = []
    current: dict[str, tuple[Any, ...]] = {}
    for s in snap.services:
        key = _change_key(s)
        current[s.name] = key
        if previous.get(s.name) != key:
            lines.append(f"{stamp} {change_line(s, now)}")
    for name in previous:
        if name not in current:
            lines.append(f"{stamp} {name}: removed from the manifest")
    return lines, current


# ----------------------------------------------------------------------------- I/O


class _Lost(Exception):
    """The daemon went away during the watch."""


def _follow(sock: Path, usage: bool) -> Iterator[SupervisorSnapshot | None]:
    """Snapshots for ever; ``None`` once each time the daemon is lost (then it reconnects).

    Raises DaemonUnreachable only when no daemon answers at the very start.
    """
    first = True
    while True:
        try:
            for snap in client.watch(sock, usage=usage):
                first = False
                yield snap
            raise _Lost()
        except (DaemonUnreachable, _Lost, ControlError) as exc:
            if first and isinstance(exc, DaemonUnreachable):
                raise
            if isinstance(exc, ControlError) and first:
                raise
            first = False
        yield None
        while not client.is_serving(sock, timeout=1.0):
            time.sleep(RECONNECT_SECONDS)


def run_watch(sock: Path, manifest_label: str) -> int:
    """Watch the daemon on ``sock`` until Ctrl-C; the exit code.

    Raises DaemonUnreachable (no daemon at the start) and ControlError (the daemon
    refused at the start) for the command to report as every command does."""
    try:
        if sys.stdout.isatty():
            return _watch_terminal(sock, manifest_label)
        return _watch_lines(sock)
    except KeyboardInterrupt:
        return ExitCode.OK


def _watch_lines(sock: Path) -> int:
    keys: dict[str, tuple[Any, ...]] = {}
    try:
        for snap in _follow(sock, usage=False):
            now = time.time()
            if snap is None:
                stamp = datetime.fromtimestamp(now).isoformat(timespec="seconds")
                print(f"{stamp} daemon: connection lost; waiting for it to come back", flush=True)
                keys = {}
                continue
            lines, keys = change_lines(keys, snap, now)
            if lines:
                print("\n".join(lines), flush=True)
    except BrokenPipeError:  # `svc status --watch | head`: the reader is done
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not complain again
    return ExitCode.OK


def _watch_terminal(sock: Path, manifest_label: str) -> int:
    console = Console()
    cpu = CpuTracker()
    latest: list[Any] = [None, ""]  # snapshot, note; replaced whole, read by the refresh thread

    def screen() -> Any:
        snap, note = latest
        if snap is None:
            return Text(f"connecting to the daemon of {manifest_label}…", style="dim")
        height = console.size.height
        note = note or f"updated {datetime.now().strftime('%H:%M:%S')} · Ctrl-C to quit"
        return status_table(snap, time.time(), cpu.percent, title=f"{snap.name} · {manifest_label}",
                            height=height, note=note, width=console.size.width)

    stream = _follow(sock, usage=True)
    first = next(stream)  # DaemonUnreachable here, before the screen changes
    latest[:] = [first, ""]
    if first is not None:
        cpu.update(first, time.time())
    with Live(console=console, screen=True, auto_refresh=True, refresh_per_second=2, get_renderable=screen,
              redirect_stdout=False, redirect_stderr=False) as live:
        live.refresh()
        for snap in stream:
            if snap is None:
                latest[1] = "daemon gone: waiting for it to come back · Ctrl-C to quit"
            else:
                cpu.update(snap, time.time())
                latest[:] = [snap, ""]
            live.refresh()
    return ExitCode.OK
