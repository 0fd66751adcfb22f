"""`svc up|down|restart|status|logs|reload|daemon|shutdown`: thin clients of the daemon."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from supervisord_lite.cli.app import (
    EXIT_FAILED,
    EXIT_NO_DAEMON,
    EXIT_OK,
    EXIT_USAGE,
    fail,
    long_manifest_option,
    main,
    manifest_option,
    resolve_manifest_path,
)
from supervisord_lite.core.model import Manifest


def _load(manifest_path: Path | None) -> Manifest:
    from supervisord_lite.core.manifest import load_manifest
    from supervisord_lite.core.problems import ManifestError

    path = resolve_manifest_path(manifest_path)
    try:
        return load_manifest(path)
    except ManifestError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)


def _check_names(manifest: Manifest, names: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in manifest.services]
    if unknown:
        import difflib

        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, list(manifest.services), n=1)
            hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        fail(f"{manifest.path}: no service named {', '.join(hints)}", EXIT_USAGE)


def _no_daemon(manifest: Manifest) -> None:
    _no_daemon_at(manifest.path)


def _no_daemon_at(path: Path) -> None:
    """Exit 3, and say so when a daemon died leaving its services running."""
    from supervisord_lite.cli.client import leftovers_of

    message = f"no daemon is running for {path} (start one with `svc up -f {path}`)"
    left = leftovers_of(path)
    if left:
        message += (
            f"\na previous daemon died leaving {len(left)} service(s) running ({', '.join(sorted(left))}); "
            "`svc up` stops them and starts them again under a new daemon"
        )
    fail(message, EXIT_NO_DAEMON)


def _say_manifest_changed(path: Path) -> None:
    from supervisord_lite.core.manifest import load_manifest
    from supervisord_lite.core.problems import ManifestError

    try:
        load_manifest(path)
    except ManifestError as exc:
        click.echo(f"warning: {path} does not validate (the daemon keeps running the last good one):\n{exc}", err=True)
        return
    click.echo(f"note: {path} changed since the daemon loaded it; `svc reload` applies the changes", err=True)


def _daemon_socket(manifest: Path | None) -> tuple[Path, Path]:
    """The manifest path and its daemon's socket, even when the file no longer validates
    (the daemon keeps the last good manifest; say so, and still reach it)."""
    from supervisord_lite.cli.client import socket_for_path, socket_of
    from supervisord_lite.core.manifest import load_manifest
    from supervisord_lite.core.problems import ManifestError

    path = resolve_manifest_path(manifest)
    try:
        return path, socket_of(load_manifest(path))
    except ManifestError as exc:
        if not path.exists():
            fail(str(exc), EXIT_USAGE)
        click.echo(f"warning: {path} does not validate (the daemon keeps running the last good one):\n{exc}", err=True)
        return path, socket_for_path(path)


def _ensure_daemon(manifest: Manifest) -> None:
    from supervisord_lite.cli.client import DaemonStartError, ensure_daemon

    try:
        if ensure_daemon(manifest):
            click.echo(f"started the daemon for {manifest.path} (log: {manifest.supervisor.state_dir / 'daemon.log'})", err=True)
    except DaemonStartError as exc:
        fail(str(exc), exc.code)


def _target(manifest: Path | None, names: tuple[str, ...]) -> tuple[Path, Path]:
    """(manifest path, daemon socket) for up/restart, starting a daemon when none runs.

    A running daemon is found from the file's state_dir alone and checks the names
    itself; the whole manifest is validated only when a daemon has to be started."""
    from supervisord_lite.cli import transport
    from supervisord_lite.cli.client import socket_for_path, socket_of

    path = resolve_manifest_path(manifest)
    if path.exists():
        sock = socket_for_path(path)
        if transport.ping(sock, timeout=1.0):
            return path, sock
    m = _load(manifest)
    _check_names(m, names)
    _ensure_daemon(m)
    return m.path, socket_of(m)


def _stream(target: tuple[Path, Path], op: str, args: dict[str, Any], timeout: float | None = None) -> Any:
    """Run a progress-reporting request; render progress; return the final result."""
    from supervisord_lite.core import protocol
    from supervisord_lite.cli import transport
    from supervisord_lite.core.snapshot import ServiceSnapshot

    path, sock = target
    live = _Progress(sys.stdout.isatty())
    try:
        for message in transport.request(sock, op, args, timeout=timeout):
            if "progress" in message:
                live.update([ServiceSnapshot.from_dict(d) for d in message["progress"]])
            elif message.get("done"):
                live.close()
                if not message.get("ok"):
                    fail(message.get("error", "failed"), int(message.get("code", EXIT_FAILED)))
                return message.get("result")
    except protocol.DaemonUnreachable:
        live.close()
        _no_daemon_at(path)
    except protocol.ControlError as exc:
        live.close()
        fail(str(exc), exc.code)
    finally:
        live.close()
    fail(f"no answer to {op}")


class _Progress:
    """Live progress: a redrawn table on a terminal, one line per change otherwise."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.seen: dict[str, str] | None = None  # None until the first message
        self.current: dict[str, Any] = {}
        self.settled_at: dict[str, float] = {}
        self.started = time.monotonic()
        self._live: Any = None
        self._closed = False

    def update(self, services: list[Any]) -> None:
        from supervisord_lite.cli.render import progress_line

        if self.tty:
            for s in services:  # the daemon sends only what changed; keep the whole table
                self.current[s.name] = s
            self._draw(list(self.current.values()))
            return
        if self.seen is None:  # where things stood when asked: the changes come next
            self.seen = {s.name: f"{s.state.value}|{s.reason}" for s in services}
            return
        for s in services:
            key = f"{s.state.value}|{s.reason}"
            if self.seen.get(s.name) != key:
                self.seen[s.name] = key
                click.echo(progress_line(s))

    def _draw(self, services: list[Any]) -> None:
        from rich.live import Live
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
    from supervisord_lite.core.durations import DURATION_HINT, parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 1e6:
        fail(f"{option}: expected {DURATION_HINT} above 0, got {text!r}", EXIT_USAGE)
    return seconds


def _finish(result: dict[str, Any], verb: str) -> None:
    from supervisord_lite.cli.render import failure_report, summary_line
    from supervisord_lite.core.snapshot import ServiceSnapshot

    services = [ServiceSnapshot.from_dict(d) for d in result["services"]]
    if result.get("all_ready"):
        click.echo(summary_line(services))
        sys.exit(EXIT_OK)
    if result.get("timed_out"):
        waiting = ", ".join(result.get("unsettled", []))
        click.echo(f"svc {verb}: gave up waiting after {result.get('timeout', 0):g}s; not settled yet: {waiting}", err=True)
    click.echo(summary_line(services), err=True)
    click.echo(failure_report(services, result.get("tails", {})), err=True)
    sys.exit(EXIT_FAILED)


@main.command()
@manifest_option
@click.argument("names", nargs=-1)
@click.option("--no-wait", is_flag=True, help="Return once the start is requested.")
@click.option(
    "--timeout",
    metavar="DURATION",
    default=None,
    help='Give up waiting after this long ("90s", "5m"); default: a bound derived from the manifest.',
)
def up(manifest: Path | None, names: tuple[str, ...], no_wait: bool, timeout: str | None) -> None:
    """Start services (all active ones by default) in order and wait until ready."""
    args: dict[str, Any] = {"names": list(names), "wait": not no_wait}
    if timeout is not None:
        args["timeout"] = _duration_option("--timeout", timeout)
    result = _stream(_target(manifest, names), "up", args)
    if no_wait:
        click.echo(f"starting {len(result['services'])} services")
        return
    _finish(result, "up")


@main.command()
@manifest_option
@click.argument("names", nargs=-1)
def down(manifest: Path | None, names: tuple[str, ...]) -> None:
    """Stop services (all by default) and what depends on them, in reverse order."""
    from supervisord_lite.core import protocol
    from supervisord_lite.cli import transport
    from supervisord_lite.cli.render import plural

    from supervisord_lite.cli.client import socket_for_path

    path = resolve_manifest_path(manifest)
    if not path.exists():
        fail(f"{path}: no such manifest file", EXIT_USAGE)
    try:  # the daemon checks the names, and works even while the file does not validate
        result = transport.call(socket_for_path(path), "down", {"names": list(names)}, timeout=None)
    except protocol.DaemonUnreachable:
        click.echo(f"no daemon is running for {path}: nothing to stop")
        return
    except protocol.ControlError as exc:
        fail(str(exc), exc.code)
    stopped = result["stopped"]
    if not stopped:
        click.echo("nothing was running" + (f" of {', '.join(names)}" if names else ""))
        return
    click.echo(f"stopped {plural(len(stopped), 'service')}" + (f": {', '.join(stopped)}" if names else ""))


@main.command()
@manifest_option
@click.argument("names", nargs=-1, required=True)
@click.option("--with-dependents", is_flag=True, help="Also restart what depends on them.")
def restart(manifest: Path | None, names: tuple[str, ...], with_dependents: bool) -> None:
    """Stop then start services (dependents untouched unless asked)."""
    result = _stream(_target(manifest, names), "restart", {"names": list(names), "dependents": with_dependents})
    _finish(result, "restart")


@main.command()
@manifest_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", "-w", is_flag=True, help="Keep showing the live state (Ctrl-C ends it).")
def status(manifest: Path | None, as_json: bool, watch: bool) -> None:
    """Every service: tier, port, state, pid, uptime, restarts, health, URL."""
    from supervisord_lite.core import protocol
    from supervisord_lite.cli import transport
    from supervisord_lite.cli.render import (
        STATUS_COLUMNS,
        STATUS_DROP_ORDER,
        attention_lines,
        fit_columns,
        plain_table,
        status_rows,
    )
    from supervisord_lite.core.snapshot import SupervisorSnapshot

    if watch:
        from supervisord_lite.cli.live import run_watch

        path, sock = _daemon_socket(manifest)
        sys.exit(run_watch(sock, str(path)))
    from supervisord_lite.cli.client import socket_for_path

    # fast path: find the daemon from the file's state_dir alone; validate the whole
    # manifest only when the daemon is not there or the file changed since it loaded it
    path = resolve_manifest_path(manifest)
    if not path.exists():
        fail(f"{path}: no such manifest file", EXIT_USAGE)
    try:
        data = transport.call(socket_for_path(path), "status", {}, timeout=10)
    except protocol.DaemonUnreachable:
        _load(manifest)  # an invalid manifest is the first thing to say
        _no_daemon_at(path)
    except protocol.ControlError as exc:
        fail(str(exc), exc.code)
    if data.get("manifest_mtime") != path.stat().st_mtime:
        _say_manifest_changed(path)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    snap = SupervisorSnapshot.from_dict(data)
    rows = status_rows(snap, time.time())
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        from supervisord_lite.cli.render import STATE_STYLE

        console = Console()
        shown = fit_columns(STATUS_COLUMNS, rows, console.width, STATUS_DROP_ORDER)
        table = Table(title=f"{snap.name} ({snap.manifest})", box=None, pad_edge=False)
        for i in shown:
            table.add_column(STATUS_COLUMNS[i], no_wrap=True)
        state_col = STATUS_COLUMNS.index("STATE")
        for s, row in zip(snap.services, rows, strict=True):
            style = STATE_STYLE.get(s.state, "")
            table.add_row(*(f"[{style}]{row[i]}[/]" if i == state_col else row[i] for i in shown))
        console.print(table)
        hidden = [STATUS_COLUMNS[i] for i in range(len(STATUS_COLUMNS)) if i not in shown]
        if hidden:
            console.print(f"[dim](too narrow for {', '.join(hidden)}: widen the window, or use --json)[/]")
    else:
        click.echo(plain_table(STATUS_COLUMNS, rows))
    for line in attention_lines(snap.services):
        click.echo(line)


@main.command()
@long_manifest_option
@click.argument("name")
@click.option("-n", "lines", type=click.IntRange(min=0), default=50, show_default=True, help="How many lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
def logs(manifest: Path | None, name: str, lines: int, follow: bool) -> None:
    """A service's output, with timestamps (from state_dir/logs/NAME.log)."""
    from supervisord_lite.host.files import tail_file

    m = _load(manifest)
    _check_names(m, (name,))
    path = m.supervisor.logs_dir / f"{name}.log"
    for line in tail_file(path, lines):
        click.echo(line)
    if not path.exists() and not follow:
        click.echo(f"(no output yet: {path} does not exist)", err=True)
        return
    if follow:
        _follow(path)


def _follow(path: Path) -> None:
    """tail -F: keep reading, reopen after rotation; ends with Ctrl-C."""
    handle = None
    inode = None
    try:
        while True:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is not None and (handle is None or st.st_ino != inode):
                if handle is not None:
                    handle.close()
                handle = open(path, "rb")
                if inode is None:
                    handle.seek(0, os.SEEK_END)
                inode = st.st_ino
            if handle is not None:
                chunk = handle.read()
                if chunk:
                    sys.stdout.write(chunk.decode(errors="replace"))
                    sys.stdout.flush()
                    continue
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if handle is not None:
            handle.close()


@main.command()
@manifest_option
def reload(manifest: Path | None) -> None:
    """Re-read the manifest and apply the difference."""
    from supervisord_lite.core import protocol
    from supervisord_lite.cli import transport
    from supervisord_lite.cli.client import socket_for_path

    path = resolve_manifest_path(manifest)
    if not path.exists():
        fail(f"{path}: no such manifest file", EXIT_USAGE)
    try:
        result = transport.call(socket_for_path(path), "reload", {}, timeout=None)
    except protocol.DaemonUnreachable:
        fail(f"no daemon is running for {path} (start one with `svc up -f {path}`)", EXIT_NO_DAEMON)
    except protocol.ControlError as exc:
        fail(str(exc), exc.code)
    parts = [f"{k}: {', '.join(v)}" for k, v in result.items() if v]
    click.echo("reloaded" + (f" ({'; '.join(parts)})" if parts else ": no changes"))


@main.command()
@manifest_option
@click.option("--json-logs/--console-logs", "json_logs", default=None, help="Log format (default: JSON unless on a terminal).")
def daemon(manifest: Path | None, json_logs: bool | None) -> None:
    """Run the daemon in the foreground (what the systemd unit runs)."""
    path = resolve_manifest_path(manifest).resolve()
    argv = [sys.executable, "-m", "supervisord_lite.daemon", "-f", str(path)]
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
    from supervisord_lite.core import protocol
    from supervisord_lite.cli import transport
    from supervisord_lite.cli.client import call, socket_of

    m = _load(manifest)
    try:
        result = call(m, "shutdown", {})
    except protocol.DaemonUnreachable:
        click.echo(f"no daemon is running for {m.path}")
        return
    except protocol.ControlError as exc:
        fail(str(exc), exc.code)
    pid = int(result["pid"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid) and not transport.ping(socket_of(m), timeout=0.2):
            click.echo(f"daemon {pid} stopped")
            return
        time.sleep(0.05)
    fail(f"daemon {pid} did not stop within {timeout:g}s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our child in tests) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
