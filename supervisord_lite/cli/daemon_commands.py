"""`svc up|down|restart|status|reload|daemon|shutdown`: thin clients of the daemon.

This module is imported for `svc --help`: the control client, the manifest loader,
the renderers and rich are imported inside the commands that use them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from supervisord_lite.cli.app import (
    daemon_errors,
    fail,
    fail_no_daemon,
    load_or_fail,
    main,
    manifest_option,
    manifest_overlays,
    require_manifest_file,
    resolve_manifest_path,
    warn_not_validating,
)
from supervisord_lite.cli.completion import complete_services
from supervisord_lite.cli.machine_commands import instance_option
from supervisord_lite.cli.statusview import changed_source, show_status
from supervisord_lite.core.exitcodes import ExitCode
from supervisord_lite.core.states import ServiceState

if TYPE_CHECKING:
    from supervisord_lite.core.model import Manifest
    from supervisord_lite.core.snapshot import ServiceSnapshot


def _check_names(manifest: Manifest, names: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in manifest.services]
    if unknown:
        import difflib  # lazy: only a typo needs it

        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, list(manifest.services), n=1)
            hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        fail(f"{manifest.path}: no service named {', '.join(hints)}", ExitCode.USAGE)


def _say_manifest_changed(path: Path, changed: Path | None = None) -> None:
    from supervisord_lite.core.manifest import load_manifest  # lazy: keeps svc --help fast
    from supervisord_lite.core.problems import ManifestError

    try:
        load_manifest(path, manifest_overlays())
    except ManifestError as exc:
        warn_not_validating(path, exc)
        return
    click.echo(f"note: {changed or path} changed since the daemon loaded it; `svc reload` applies the changes", err=True)


def _daemon_socket(manifest: Path | None) -> tuple[Path, Path]:
    """The manifest path and its daemon's socket, even when the file no longer validates
    (the daemon keeps the last good manifest; say so, and still reach it)."""
    from supervisord_lite.cli.client import socket_for_path, socket_of  # lazy: keeps svc --help fast
    from supervisord_lite.core.manifest import load_manifest
    from supervisord_lite.core.problems import ManifestError

    path = resolve_manifest_path(manifest)
    require_manifest_file(path)
    try:
        return path, socket_of(load_manifest(path, manifest_overlays()))
    except ManifestError as exc:
        warn_not_validating(path, exc)
        return path, socket_for_path(path)


def _ensure_daemon(manifest: Manifest) -> None:
    """Start the manifest's daemon unless one serves it; record the manifest in the
    machine's registry meanwhile (while the daemon starts, its own process works), and
    tell what the new daemon stopped of a dead predecessor's before it served."""
    from supervisord_lite.cli.daemon_start import (  # lazy: keeps svc --help fast
        DaemonFound,
        DaemonStartError,
        daemon_log_path,
        ensure_daemon,
    )

    def record() -> None:
        from supervisord_lite.host import registry  # lazy: only a daemon's start reaches it

        registry.refresh(manifest)

    try:
        reached = ensure_daemon(manifest, meanwhile=record)
    except DaemonStartError as exc:
        fail(str(exc), exc.code)
    if reached.found is DaemonFound.STARTED:
        click.echo(f"started the daemon for {manifest.path} (log: {daemon_log_path(manifest)})", err=True)
        _say_left_by_predecessor(reached.left_by_predecessor)
    elif reached.found is DaemonFound.JOINED:
        click.echo(f"joined the daemon another command started for {manifest.path} at the same moment", err=True)


def _target(manifest: Path | None, names: tuple[str, ...]) -> tuple[Path, Path]:
    """(manifest path, daemon socket) for up/restart, starting a daemon when none runs.

    A running daemon is found from the file's state_dir alone and checks the names
    itself; the whole manifest is validated only when a daemon has to be started (the
    console script may have started one already: a command that fails first ends it)."""
    from supervisord_lite.cli.client import is_serving, socket_for_path, socket_of  # lazy: keeps svc --help fast
    from supervisord_lite.cli.daemon_start import abandon_early, started_early

    path = resolve_manifest_path(manifest)
    if path.exists() and not started_early():  # the early daemon may serve by now: ensure_daemon tells whose it is
        sock = socket_for_path(path)
        if is_serving(sock, timeout=1.0):
            return path, sock
    try:
        m = load_or_fail(path)
        _check_names(m, names)
    except SystemExit:
        abandon_early()
        raise
    _ensure_daemon(m)
    return m.path, socket_of(m)


_READY = ServiceState.READY.value


def _change_key(service: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a progress line worth printing (of a service as the daemon sent it): a new
    state or reason, or becoming ready again (a restart can go from ready to ready between
    two updates)."""
    state = service["state"]
    return state, service.get("reason", ""), service.get("ready_at") if state == _READY else None


def _say_left_by_predecessor(report: Mapping[str, Mapping[str, Sequence[int]]]) -> None:
    """What a new daemon found of a dead one's services, before it started anything."""
    if stopped := report.get("stopped"):
        click.echo(f"a previous daemon died; stopped what it left running: {_processes(stopped)}", err=True)
    if left := report.get("left"):
        click.echo(f"warning: could not stop what a previous daemon left running: {_processes(left)}", err=True)
    if not_ours := report.get("not_ours"):
        click.echo(f"warning: not stopping what the state file names but is not a service of ours: {_processes(not_ours)}", err=True)


def _processes(by_service: Mapping[str, Sequence[int]]) -> str:
    """``db (pid 12), api (pids 34, 35)``"""
    return ", ".join(
        f"{name} (pid{'s' if len(pids) > 1 else ''} {', '.join(map(str, pids))})" for name, pids in by_service.items()
    )


class _Progress:
    """Live progress: a redrawn table on a terminal, one line per change otherwise."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.seen: dict[str, tuple[Any, ...]] | None = None  # None until the first message
        self.current: dict[str, ServiceSnapshot] = {}
        self.settled_at: dict[str, float] = {}
        self.started = time.monotonic()
        self._live: Any = None
        self._closed = False

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # before anything else is printed: a live table would draw over it

    def update(self, services: list[dict[str, Any]]) -> None:
        """One update, each service as the daemon sent it: off a terminal no snapshot is
        built, and the lines of the services that changed are written at once."""
        if self.tty:
            from supervisord_lite.core.snapshot import ServiceSnapshot  # lazy: keeps svc --help fast

            for d in services:  # the daemon sends only what changed; keep the whole table
                self.current[d["name"]] = ServiceSnapshot.from_dict(d)
            self._draw(list(self.current.values()))
            return
        from supervisord_lite.cli.render import progress_text  # lazy: keeps svc --help fast

        if self.seen is None:  # where things stood when asked: the changes come next
            self.seen = {d["name"]: _change_key(d) for d in services}
            return
        lines = []
        for d in services:
            key = _change_key(d)
            if self.seen.get(d["name"]) != key:
                self.seen[d["name"]] = key
                lines.append(progress_text(d["name"], d["state"], d.get("reason", ""), d.get("ready_duration"), d.get("port")))
        if lines:
            click.echo("\n".join(lines))

    def _draw(self, services: list[ServiceSnapshot]) -> None:
        from rich.live import Live  # lazy: rich is slow to import, and only a terminal needs it
        from rich.table import Table

        from supervisord_lite.cli.render import STATE_STYLE, state_text
        from supervisord_lite.core.states import TRANSIENT_STATES, ServiceState

        table = Table(box=None, pad_edge=False)
        for col in ("SERVICE", "TIER", "PORT", "STATE", "TIME"):
            table.add_column(col)
        now = time.time()
        elapsed = time.monotonic() - self.started
        for s in services:
            if s.state in TRANSIENT_STATES:
                self.settled_at.pop(s.name, None)
                took = f"{elapsed:.1f}s"
            elif s.state is ServiceState.READY and s.ready_duration is not None:
                took = f"{s.ready_duration:.2f}s"
            else:  # an outcome: the clock stops
                took = f"{self.settled_at.setdefault(s.name, elapsed):.1f}s"
            table.add_row(s.name, s.tier, str(s.port or "-"), f"[{STATE_STYLE.get(s.state, '')}]{state_text(s, now)}[/]", took)
        if self._live is None:
            self._live = Live(table, refresh_per_second=10, transient=False)
            self._live.start()
        else:
            self._live.update(table)

    def close(self) -> None:
        if self._live is not None and not self._closed:
            self._live.stop()
            self._closed = True


def _duration_option(option: str, text: str) -> float:
    from supervisord_lite.core.durations import DURATION_HINT, parse_duration  # lazy: keeps svc --help fast

    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 1e6:
        fail(f"{option}: expected {DURATION_HINT} above 0, got {text!r}", ExitCode.USAGE)
    return seconds


def _finish(result: dict[str, Any], verb: str = "up") -> NoReturn:
    """The outcome of `svc up` or `svc restart`: how many are ready; what failed and why;
    what had not settled when the wait ran out."""
    from supervisord_lite.cli.render import failure_report, ready_count_line  # lazy: keeps svc --help fast

    states = [d["state"] for d in result["services"]]
    if result.get("all_ready"):
        click.echo(ready_count_line(states))
        sys.exit(ExitCode.OK)
    from supervisord_lite.core.snapshot import ServiceSnapshot  # lazy: only a failure report needs the model

    taken_back, removed = result.get("taken_back", []), result.get("removed", [])
    elsewhere = set(taken_back) | set(removed)  # not failures: another command decided
    services = [ServiceSnapshot.from_dict(d) for d in result["services"] if d["name"] not in elsewhere]
    if result.get("timed_out"):
        waiting = ", ".join(result.get("unsettled", []))
        click.echo(f"svc {verb}: gave up waiting after {result.get('timeout', 0):g}s; not settled yet: {waiting}", err=True)
    click.echo(ready_count_line(states), err=True)
    if report := failure_report(services, result.get("tails", {})):
        click.echo(report, err=True)
    if taken_back:
        click.echo(f"taken back by a later stop (`svc down`, or the daemon stopping) before this {verb} was done with them: "
                   f"{', '.join(taken_back)}", err=True)
    if removed:
        click.echo(f"removed from the manifest by `svc reload` before this {verb} was done with them: {', '.join(removed)}", err=True)
    sys.exit(ExitCode.FAILED)


def _stop_without_daemon(path: Path, manifest: Manifest | None, names: tuple[str, ...], *, down: bool) -> NoReturn:
    """No daemon answers: stop what the last one left running, by its state file, the
    services' sessions and their instance marker. Exit 0 only once nothing of it (of
    ``names`` and their dependents, when given) is left; 1 naming what still runs.

    A `down` also takes the services out of the wanted set, so the next daemon (at
    boot) does not start them; a `shutdown` leaves the wanted set as it is."""
    from supervisord_lite.cli.client import CannotInspect, DaemonBusy, socket_for_path, state_dir_for_path, stop_leftovers
    from supervisord_lite.core import graph

    state_dir = manifest.supervisor.state_dir if manifest is not None else state_dir_for_path(path)
    services: set[str] | None = None
    if names and manifest is not None:
        _check_names(manifest, names)
        services = {n for step in graph.stop_plan(manifest, names) for n in step}
    elif names:
        services = set(names)  # the file does not validate: no dependents to add
    try:
        report = stop_leftovers(state_dir, manifest, services, unwant=down, wait=5.0)
    except DaemonBusy as exc:
        fail(
            f"no daemon answers on {socket_for_path(path)}, but {exc} (state_dir {state_dir}): "
            "it may be starting or stopping; try again in a moment",
            ExitCode.FAILED,
        )
    except CannotInspect as exc:
        fail(f"no daemon answers for {path}, and {exc}", ExitCode.FAILED)
    if report.stopped:
        click.echo(f"no daemon is running for {path}; stopped what the last one left running: {_processes(report.stopped)}")
    elif not report.left:
        click.echo(f"no daemon is running for {path}: nothing to stop")
    if report.left:
        fail(f"still running, could not be stopped: {_processes(report.left)}", ExitCode.FAILED)
    sys.exit(ExitCode.OK)


def _down_without_daemon(path: Path, names: tuple[str, ...]) -> NoReturn:
    _stop_without_daemon(path, _manifest_if_valid(path), names, down=True)


def _manifest_if_valid(path: Path) -> Manifest | None:
    from supervisord_lite.core.manifest import load_manifest  # lazy: keeps svc --help fast
    from supervisord_lite.core.problems import ManifestError

    try:
        return load_manifest(path, manifest_overlays())
    except ManifestError:
        return None


def _invalid_or_no_daemon(path: Path) -> NoReturn:
    """Why `svc status` has nothing to show: an invalid manifest is the first thing to say."""
    load_or_fail(path)
    fail_no_daemon(path)


@main.command()
@manifest_option
@instance_option
@click.argument("names", nargs=-1, shell_complete=complete_services)
@click.option("--no-wait", is_flag=True, help="Return once the start is requested.")
@click.option(
    "--timeout",
    metavar="DURATION",
    default=None,
    help='Give up waiting after this long ("90s", "5m"); default: a bound derived from the manifest.',
)
@click.option("--attach", "-a", is_flag=True, help="Then follow their logs; Ctrl-C stops what this command started.")
def up(manifest: Path | None, names: tuple[str, ...], no_wait: bool, timeout: str | None, attach: bool) -> None:
    """Start services (all active ones by default) in order and wait until ready.

    NAMES: services, tiers (tier:NAME), groups (@GROUP)."""
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast

    settle = _duration_option("--timeout", timeout) if timeout is not None else None
    if names:  # lazy: the selectors load the manifest model
        from supervisord_lite.cli.selection import select_services

        names = select_services(resolve_manifest_path(manifest), names, startable=True)
    path, sock = _target(manifest, names)
    attachment = None
    if attach:
        from supervisord_lite.cli.logs_commands import Attachment  # lazy: only --attach follows logs

        attachment = Attachment(path, sock, names)
    with attachment or nullcontext(), daemon_errors(path), _Progress(sys.stdout.isatty()) as progress:
        result = client.up(sock, names, wait=not no_wait, settle_timeout=settle, on_progress_sent=progress.update)
    if attachment is not None:
        attachment.follow(result, report=None if no_wait else partial(_finish, result))
    if no_wait:
        click.echo(f"starting {len(result['services'])} services")
        return
    _finish(result)


@main.command()
@manifest_option
@click.argument("names", nargs=-1, shell_complete=complete_services)
def down(manifest: Path | None, names: tuple[str, ...]) -> None:
    """Stop services (all by default) and what depends on them, in reverse order."""
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast
    from supervisord_lite.cli.down_summary import down_lines, overtaken_line

    path = resolve_manifest_path(manifest)
    require_manifest_file(path)
    if names:  # `svc down` of everything reads no more of the manifest than its state_dir
        from supervisord_lite.cli.selection import select_services

        names = select_services(path, names)
    # the daemon checks the names, and works even while the file does not validate
    with daemon_errors(path, when_absent=partial(_down_without_daemon, path, names)):
        result = client.down(client.socket_for_path(path), names)
    for line in down_lines(result, names):
        click.echo(line)
    if (overtaken := overtaken_line(result)) is not None:
        click.echo(overtaken, err=True)
        sys.exit(ExitCode.FAILED)


@main.command()
@manifest_option
@click.argument("names", nargs=-1, shell_complete=complete_services)
@click.option("--with-dependents", is_flag=True, help="Also restart what depends on them.")
def restart(manifest: Path | None, names: tuple[str, ...], with_dependents: bool) -> None:
    """Stop then start services (dependents untouched unless asked); with no name, every
    running service, in order."""
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast
    from supervisord_lite.cli.selection import restart_targets, select_services

    if names:
        names = select_services(resolve_manifest_path(manifest), names)
        path, sock = _target(manifest, names)
    else:
        path, sock, names = restart_targets(manifest)
    with daemon_errors(path), _Progress(sys.stdout.isatty()) as progress:
        result = client.restart(sock, names, dependents=with_dependents, on_progress_sent=progress.update)
    _finish(result)


@main.command()
@manifest_option
@click.argument("names", nargs=-1, shell_complete=complete_services)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", "-w", is_flag=True, help="Keep showing the live state (Ctrl-C ends it).")
def status(manifest: Path | None, names: tuple[str, ...], as_json: bool, watch: bool) -> None:
    """Every service (or those NAMES select): tier, port, state, pid, uptime, restarts, health, URL."""
    if watch:
        if names:
            fail("--watch shows every service; leave out the names", ExitCode.USAGE)
        _watch(manifest)
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast

    # fast path: find the daemon from the file's state_dir alone; validate the whole
    # manifest only when the daemon is not there or the file changed since it loaded it
    path = resolve_manifest_path(manifest)
    require_manifest_file(path)
    selected: set[str] = set()
    if names:
        from supervisord_lite.cli.selection import select_services

        selected = set(select_services(path, names, warn=False))  # the changed-file note below says it
    with daemon_errors(path, when_absent=partial(_invalid_or_no_daemon, path)):
        data = client.status(client.socket_for_path(path), timeout=10)
    if (changed := changed_source(data, path)) is not None:
        _say_manifest_changed(path, changed)
    if selected:
        from supervisord_lite.cli.selection import filter_services

        data["services"] = filter_services(path, data["services"], selected)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from supervisord_lite.core.snapshot import SupervisorSnapshot  # lazy: --json needs no model

    show_status(SupervisorSnapshot.from_dict(data))


def _watch(manifest: Path | None) -> NoReturn:
    from supervisord_lite.cli.live import run_watch  # lazy: rich, and only --watch needs it

    path, sock = _daemon_socket(manifest)
    with daemon_errors(path):
        sys.exit(run_watch(sock, str(path)))


@main.command()
@manifest_option
def reload(manifest: Path | None) -> None:
    """Re-read the manifest and apply the difference."""
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast

    path = resolve_manifest_path(manifest)
    require_manifest_file(path)
    with daemon_errors(path):
        result = client.reload(client.socket_for_path(path))
    parts = [f"{k}: {', '.join(v)}" for k, v in result.items() if v]
    click.echo("reloaded" + (f" ({'; '.join(parts)})" if parts else ": no changes"))


@main.command()
@manifest_option
@click.option("--json-logs/--console-logs", "json_logs", default=None, help="Log format (default: JSON unless on a terminal).")
def daemon(manifest: Path | None, json_logs: bool | None) -> None:
    """Run the daemon in the foreground (what the systemd unit runs)."""
    path = resolve_manifest_path(manifest).resolve()
    argv = [sys.executable, "-m", "supervisord_lite.daemon", "-f", str(path)]
    argv += [arg for overlay in manifest_overlays() for arg in ("-f", str(overlay.resolve()))]
    if json_logs is not None:
        argv.append("--json-logs" if json_logs else "--console-logs")
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not import: the pid stays the one systemd started (Type=notify), and the
    # command line keeps out of the daemon's layers
    os.execv(sys.executable, argv)


@main.command()
@manifest_option
@click.option("--timeout", type=float, default=120.0, show_default=True)
def shutdown(manifest: Path | None, timeout: float) -> None:
    """Stop every service and end the daemon."""
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast

    m = load_or_fail(resolve_manifest_path(manifest))
    sock = client.socket_of(m)
    with daemon_errors(m.path, when_absent=partial(_stop_without_daemon, m.path, m, (), down=False)):
        result = client.shutdown(sock)
    pid = int(result["pid"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid) and not client.is_serving(sock, timeout=0.2):
            click.echo(f"daemon {pid} stopped")
            return
        time.sleep(0.05)
    fail(f"daemon {pid} did not stop within {timeout:g}s")


def _alive(pid: int) -> bool:
    from supervisord_lite.host.proctable import is_running  # lazy: loads psutil

    return is_running(pid)  # a zombie (our child in tests) counts as gone
