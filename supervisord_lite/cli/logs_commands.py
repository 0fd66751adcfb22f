"""`svc logs` and `svc up --attach`: the services' output as one stream, like `docker compose logs`.

The lines come from the files the daemon writes (``state_dir/logs/NAME.log``), never
from the daemon itself: `svc logs` needs only the manifest's ``state_dir``, so it works
while the manifest does not validate (a name with a log file is enough), and while no
daemon runs. What is shown, and how, is ``cli/logview.py``; reading the rotated files,
``host/logfiles.py``.

`svc up --attach` follows the logs once the services are up. The first Ctrl-C stops
what that `svc up` started (a `svc down` of those services, its progress shown by the
daemon's own lines in their logs: stopping, the exit, stopped) and exits 0; a second
Ctrl-C exits at once with 130 and leaves the daemon to finish stopping them (each still
gets its stop_signal, then SIGKILL after its stop_timeout).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import click

from supervisord_lite.cli.completion import complete_services
from supervisord_lite.cli.app import (
    load_or_fail,
    long_manifest_option,
    main,
    manifest_overlays,
    require_manifest_file,
    resolve_manifest_path,
)
from supervisord_lite.cli.logview import (
    LogLine,
    SelectionError,
    Style,
    format_line,
    merge,
    parse_line,
    parse_lines,
    parse_since,
    select_logged,
    stamp_of,
    use_colour,
)
from supervisord_lite.core.exitcodes import ExitCode
from supervisord_lite.core.states import RUNNING_STATES, ServiceState
from supervisord_lite.host.logfiles import LogSource, logged_services

DEFAULT_LINES = 50
ALL_LINES = -1
POLL_SECONDS = 0.1
#: How often `svc up --attach` asks the daemon whether anything it follows still runs.
STATUS_SECONDS = 2.0
#: The exit code of a command cut short by a second Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130
#: States of a service that runs or is on its way to running.
_UNDER_WAY = RUNNING_STATES | {ServiceState.WAITING, ServiceState.BACKOFF, ServiceState.CONFLICT}
_AT_REST = {ServiceState.STOPPED, ServiceState.DISABLED, ServiceState.DEPRECATED}
#: States in which a service will print nothing more (a failed one may be retried: it is followed).
_DONE = _AT_REST | {ServiceState.EXITED}


class _LineCount(click.ParamType):
    """``-n``: a number of lines (0 or more), or ``all``."""

    name = "N|all"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        if str(value).strip().lower() == "all":
            return ALL_LINES
        try:
            count = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a number of lines or 'all'", param, ctx)
        if count < 0:
            self.fail(f"{value!r} is negative: give 0 or more, or 'all'", param, ctx)
        return count


class _Every:
    """``check()`` at most every ``seconds``; False in between (a poll of the daemon is not free)."""

    def __init__(self, seconds: float, check: Callable[[], bool]) -> None:
        self.seconds = seconds
        self.check = check
        self._next = time.monotonic() + seconds

    def __call__(self) -> bool:
        if time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + self.seconds
        return self.check()


class LogView:
    """The selected services' logs: their history merged by time, then new lines as they come."""

    def __init__(self, logs_dir: Path, names: Sequence[str], style: Style) -> None:
        self.style = style
        self.sources = {name: LogSource(logs_dir / f"{name}.log") for name in names}
        self._stamps = dict.fromkeys(names, "")  # each service's last stamp, for a line without one
        reconfigure = getattr(sys.stdout, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")  # a log may hold what the terminal's encoding cannot

    def show_history(self, count: int, since: str | None) -> None:
        """Each service's last ``count`` lines (ALL_LINES: every one), from ``since`` (a stamp) on."""
        self._write(merge(self._history(name, source, count, since) for name, source in self.sources.items()))

    def _history(self, name: str, source: LogSource, count: int, since: str | None) -> Iterable[LogLine]:
        if since is None:
            return parse_lines(name, source.history() if count == ALL_LINES else source.tail(count))
        lines: Iterator[LogLine] = (
            line
            for line in parse_lines(name, source.history(starts_before=lambda first: parse_line(name, first).stamp < since))
            if line.stamp >= since
        )
        return lines if count == ALL_LINES else deque(lines, maxlen=count)

    def poll(self) -> bool:
        """Print what was appended since the last poll, merged by time; False when nothing was."""
        batches = []
        for name, source in self.sources.items():
            raws = source.poll()
            if raws:
                lines = []
                for raw in raws:
                    line = parse_line(name, raw, self._stamps[name])
                    self._stamps[name] = line.stamp
                    lines.append(line)
                batches.append(lines)
        if not batches:
            return False
        self._write(merge(batches))
        return True

    def follow(self, until: Callable[[], bool] = lambda: False) -> None:
        """Print new lines as they come until ``until()`` (or Ctrl-C: KeyboardInterrupt)."""
        while not until():
            if not self.poll():
                time.sleep(POLL_SECONDS)
        self.poll()  # what the last moments wrote

    def _write(self, lines: Iterable[LogLine]) -> None:
        out = sys.stdout
        for line in lines:
            out.write(format_line(line, self.style) + "\n")
        out.flush()

    def close(self) -> None:
        for source in self.sources.values():
            source.close()


def _style(names: Sequence[str], *, no_color: bool = False, timestamps: bool = False, prefix: bool = True) -> Style:
    colour = not no_color and use_colour(sys.stdout.isatty(), os.environ)
    return Style.for_names(names, colour=colour, timestamps=timestamps, prefix=prefix)


def _end_the_caret_line() -> None:
    """A terminal shows ``^C`` where the cursor was: what is said next starts on a line of its own."""
    if sys.stderr.isatty():
        click.echo("", err=True)


def _quiet_stdout() -> None:
    """The reader went away (`svc logs | head`): send what is left nowhere, quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _selection(path: Path, selectors: tuple[str, ...]) -> tuple[Path, list[str]]:
    """The logs folder and the services to show.

    From the manifest when it loads (names, tiers; by default every active service and
    every other one that has a log); when it does not, from the log files alone, so
    the logs can be read while fixing it (a tier then means nothing: its problems are
    printed as `svc check` prints them, exit 2)."""
    from supervisord_lite.cli.client import state_dir_for_path  # lazy: keeps svc --help fast
    from supervisord_lite.core.manifest import load_manifest
    from supervisord_lite.core.problems import ManifestError

    require_manifest_file(path)
    try:
        manifest = load_manifest(path, manifest_overlays())
    except ManifestError:
        logs_dir = state_dir_for_path(path) / "logs"
        logged = logged_services(logs_dir)
        try:
            names = select_logged(selectors, logged) if logged else []
        except SelectionError:
            names = []
        if not names:
            load_or_fail(path)  # says why the manifest does not load, exit 2
        click.echo(f"note: {path} does not validate (`svc check` says why); showing the logs in {logs_dir}", err=True)
        return logs_dir, names
    logs_dir = manifest.supervisor.logs_dir
    logged = logged_services(logs_dir)
    if not selectors:
        return logs_dir, [name for name, spec in manifest.services.items() if spec.is_active or name in logged]
    from supervisord_lite.cli.selection import names_of  # lazy: keeps svc --help fast

    # a service no longer in the manifest still has its log; everything else is a selector
    gone = [word for word in selectors if word in logged and word not in manifest.services and word not in manifest.tiers]
    chosen = names_of(manifest, [word for word in selectors if word not in gone])
    return logs_dir, list(dict.fromkeys([*chosen, *gone]))


@main.command()
@long_manifest_option
@click.argument("selectors", nargs=-1, metavar="[NAME|TIER|@GROUP]...", shell_complete=complete_services)
@click.option("-n", "--tail", "count", type=_LineCount(), default=None,
              help=f"Lines of each service: a number or 'all' (default {DEFAULT_LINES}; all with --since).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C ends it).")
@click.option("--since", metavar="WHEN", help="Lines from then on: 10m, 1h30m, or 2026-11-29T10:00 (local time).")
@click.option("-t", "--timestamps", is_flag=True, help="Show each line's time (UTC, as in the files).")
@click.option("--no-color", is_flag=True, help="No colours (also: NO_COLOR=1, or output not to a terminal).")
@click.option("--no-log-prefix", is_flag=True, help="No service name before each line.")
def logs(
    manifest: Path | None,
    selectors: tuple[str, ...],
    count: int | None,
    follow: bool,
    since: str | None,
    timestamps: bool,
    no_color: bool,
    no_log_prefix: bool,
) -> None:
    """The output of services (all by default), merged by time, each line after its service's name.

    From state_dir/logs/NAME.log; state changes the supervisor wrote there are shown too."""
    since_stamp = None
    if since is not None:
        try:
            since_stamp = stamp_of(parse_since(since, time.time()))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--since'") from None
    if count is None:
        count = ALL_LINES if since is not None else DEFAULT_LINES
    logs_dir, names = _selection(resolve_manifest_path(manifest), selectors)
    view = LogView(logs_dir, names, _style(names, no_color=no_color, timestamps=timestamps, prefix=not no_log_prefix))
    if not follow and not any((logs_dir / f"{name}.log").exists() for name in names):
        click.echo(f"(no output yet: no log in {logs_dir} for {', '.join(names) or 'any service'})", err=True)
    try:
        view.show_history(count, since_stamp)
        if follow:
            view.follow()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        _quiet_stdout()
    finally:
        view.close()


# ----------------------------------------------------------------------------- svc up --attach


class Attachment:
    """`svc up --attach`: made before the start (what ran already, and since when); Ctrl-C
    during the start, or while following, stops what this `svc up` started."""

    def __init__(self, manifest_path: Path, sock: Path, names: tuple[str, ...]) -> None:
        from supervisord_lite.cli.client import state_dir_for_path  # lazy: keeps svc --help fast

        self.sock = sock
        self.names = names
        self.logs_dir = state_dir_for_path(manifest_path) / "logs"
        self.began = time.time()
        self.ran_before = {s.name for s in self._services() if s.state in _UNDER_WAY}
        self.view: LogView | None = None

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is KeyboardInterrupt:  # while `svc up` was starting them
            _end_the_caret_line()
            sys.exit(self._stop(None))

    def follow(self, result: dict[str, Any], report: Callable[[], object] | None) -> NoReturn:
        """Say how the start went (``report``), then follow the logs until Ctrl-C; exits."""
        if report is not None:
            try:
                report()
            except SystemExit:
                pass  # what it says is said; the services are followed either way
        started = [s["name"] if isinstance(s, dict) else str(s) for s in result.get("services", [])]
        shown = list(self.names) or started
        click.echo(f"attached to {', '.join(shown)}: Ctrl-C stops what this `svc up` started", err=True)
        self.view = LogView(self.logs_dir, shown, _style(shown))
        try:
            self.view.show_history(ALL_LINES, stamp_of(self.began))  # what they said while starting
            self.view.follow(until=_Every(STATUS_SECONDS, lambda: self._all_done(shown)))
            click.echo("nothing left to follow: every one of them stopped or exited (or the daemon ended)", err=True)
        except KeyboardInterrupt:
            _end_the_caret_line()
            sys.exit(self._stop(started))
        except BrokenPipeError:
            _quiet_stdout()
            sys.exit(self._stop(started))
        sys.exit(ExitCode.OK)

    def _all_done(self, names: list[str]) -> bool:
        """True once every followed service is stopped (`svc down` elsewhere) or has exited for
        good (a oneshot), or the daemon is gone."""
        return all(s.state in _DONE for s in self._services() if s.name in names)

    def _services(self) -> list[Any]:
        from supervisord_lite.cli import client  # lazy: keeps svc --help fast
        from supervisord_lite.core.protocol import ControlError, DaemonUnreachable
        from supervisord_lite.core.snapshot import SupervisorSnapshot

        try:
            return list(SupervisorSnapshot.from_dict(client.status(self.sock, timeout=10)).services)
        except (DaemonUnreachable, ControlError):
            return []

    def _stop(self, started: list[str] | None) -> int:
        """Stop what this `svc up` started (of ``started``, when known), showing their logs
        meanwhile; the exit code. A Ctrl-C meanwhile leaves the rest to the daemon."""
        try:
            mine = tuple(
                s.name
                for s in self._services()
                if s.name not in self.ran_before and s.state not in _AT_REST and (started is None or s.name in started)
            )
            if not mine:
                click.echo("nothing to stop: what this `svc up` asked for was running before it", err=True)
                return ExitCode.OK
            click.echo(f"stopping {', '.join(mine)} (Ctrl-C again to exit at once and leave the daemon stopping them)", err=True)
            outcome: dict[str, Any] = {}
            worker = threading.Thread(target=self._down, args=(mine, outcome), name="svc-down", daemon=True)
            worker.start()
            view = self.view or LogView(self.logs_dir, mine, _style(mine))
            try:
                view.follow(until=lambda: not worker.is_alive())
            except BrokenPipeError:
                _quiet_stdout()
                worker.join()
        except KeyboardInterrupt:
            click.echo("\nsvc: exiting; the daemon goes on stopping them (stop_signal, then SIGKILL after stop_timeout)", err=True)
            return INTERRUPTED
        if "error" in outcome:
            click.echo(f"svc: {outcome['error']}", err=True)
            return int(getattr(outcome["error"], "code", ExitCode.FAILED))
        from supervisord_lite.cli.down_summary import down_lines, overtaken_line

        for line in down_lines(outcome["result"], mine):
            click.echo(line, err=True)
        if (overtaken := overtaken_line(outcome["result"])) is not None:
            click.echo(overtaken, err=True)
            return ExitCode.FAILED
        return ExitCode.OK

    def _down(self, names: tuple[str, ...], outcome: dict[str, Any]) -> None:
        from supervisord_lite.cli import client  # lazy: keeps svc --help fast

        try:
            outcome["result"] = client.down(self.sock, names)
        except Exception as exc:  # reported by the main thread
            outcome["error"] = exc
