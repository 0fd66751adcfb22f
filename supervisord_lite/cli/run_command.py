"""`svc run [--needs NAME|@group ...] [--timeout D] -- CMD [ARGS...]`: the platform for one command.

What CI wants (compose's ``--exit-code-from``, ``tilt ci``): bring up what CMD needs
(every active service by default), wait until it is ready, run CMD with where each
service is in its environment (``core.runenv``), then stop what this command started
and exit with CMD's code. What was already running before stays running.

Signals: SIGINT, SIGTERM and SIGHUP while the platform comes up stop what was started
and exit 128+N. While CMD runs they go to CMD (a Ctrl-C at a terminal already reached
it, as it shares our process group: not sent twice), and svc run waits for it; a second
signal kills CMD. During the clean-up, one more signal abandons it and says what is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import click

from supervisord_lite.cli.app import fail, load_or_fail, main, manifest_option, resolve_manifest_path
from supervisord_lite.cli.completion import complete_services
from supervisord_lite.core.exitcodes import ExitCode

if TYPE_CHECKING:
    from supervisord_lite.core.model import Manifest
    from supervisord_lite.core.snapshot import ServiceSnapshot

RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: States a service counts as already running in (svc run leaves those alone), a finished oneshot included.
ALREADY_UP = frozenset({"waiting", "starting", "ready", "unhealthy", "backoff", "exited"})
#: How long a silent daemon may keep `svc run` waiting on one answer (it sends one at least every second).
ANSWER_TIMEOUT = 30.0


class Interrupted(Exception):
    """A signal reached svc run while it was not running CMD."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _PlatformDown(Exception):
    """The platform did not come up; the message says what and why."""


class _Relay:
    """Where SIGINT, SIGTERM and SIGHUP go: to CMD while it runs, else ``Interrupted``."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.received = 0

    def install(self) -> None:
        for signum in RELAYED:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        child = self.child
        if child is None or child.returncode is not None:
            raise Interrupted(signum)
        if self.received > 1:
            click.echo(f"svc run: {signal.Signals(signum).name} again: killing {child.args[0]}", err=True)
            child.kill()
        elif not (signum == signal.SIGINT and _terminal_sent_it()):
            child.send_signal(signum)


def _terminal_sent_it() -> bool:
    """A Ctrl-C typed at our terminal went to its whole foreground process group, CMD included."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


@dataclass
class _Platform:
    """What svc run asked for, and what it has to put back."""

    manifest: Manifest
    sock: Path
    requested: tuple[str, ...]  # what --needs selected (none: every active service)
    plan: list[str]  # the needed services and what they need
    before: frozenset[str]  # what was running before
    daemon_started: bool

    @property
    def started(self) -> list[str]:
        return [name for name in self.plan if name not in self.before]


def _timeout_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from supervisord_lite.core.durations import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command(name="run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@manifest_option
@click.option(
    "--needs", "-n", multiple=True, metavar="NAME|@GROUP", shell_complete=complete_services,
    help="What CMD needs (repeatable; services, tiers, @groups); default: every active service.",
)  # fmt: skip
@click.option("--timeout", "-t", callback=_timeout_option, metavar="D", help='Give up when not ready within D ("90s", "5m").')
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
def run(manifest: Path | None, needs: tuple[str, ...], timeout: float | None, command: tuple[str, ...]) -> NoReturn:
    """Bring up what CMD needs, run CMD against it, stop what was started, exit with CMD's code.

    CMD gets SVC_<NAME>_PORT and SVC_<NAME>_URL for every ready service (the name
    upper-cased, other characters than letters and digits as "_"), and SVC_MANIFEST.
    Exit 1 when the platform did not come up."""
    from supervisord_lite.core.protocol import ControlError, DaemonUnreachable  # lazy: keeps svc --help fast

    relay = _Relay()
    relay.install()  # first: a signal from here on cleans up what was started
    platform: _Platform | None = None
    code: int = ExitCode.FAILED
    try:
        loaded = load_or_fail(resolve_manifest_path(manifest))
        platform = _prepare(loaded, needs)
        if platform.daemon_started:
            _start_daemon(loaded)
        ready = _bring_up(platform, timeout)
        code = _run_command(command, _environment(loaded, ready), relay)
    except Interrupted as exc:
        click.echo(f"svc run: {exc}: stopping" if platform else f"svc run: {exc}", err=True)
        code = 128 + exc.signum
    except _PlatformDown as exc:
        click.echo(f"svc run: {exc}", err=True)
    except (ControlError, DaemonUnreachable) as exc:
        click.echo(f"svc run: cannot go on talking to the daemon: {exc}", err=True)
    finally:
        relay.child = None  # a signal now abandons the clean-up
        if platform is not None:
            _put_back(platform)
    sys.exit(code)


def _prepare(loaded: Manifest, needs: Sequence[str]) -> _Platform:
    """What is needed, and what runs now (nothing when no daemon runs)."""
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast
    from supervisord_lite.cli.selection import names_of
    from supervisord_lite.core import graph

    names = names_of(loaded, needs, startable=True)
    try:
        plan = graph.start_set(loaded, names or None)
    except graph.SelectionError as exc:
        fail(str(exc), ExitCode.USAGE)
    sock = client.socket_of(loaded)
    before: frozenset[str] = frozenset()
    running = client.is_serving(sock, timeout=1.0)
    if running:
        before = frozenset(s["name"] for s in client.status(sock)["services"] if s["state"] in ALREADY_UP)
    return _Platform(loaded, sock, names, plan, before, daemon_started=not running)


def _start_daemon(loaded: Manifest) -> None:
    from supervisord_lite.cli import daemon_start  # lazy: keeps svc --help fast

    try:
        daemon_start.ensure_daemon(loaded)
    except daemon_start.DaemonStartError as exc:
        raise _PlatformDown(str(exc)) from None
    click.echo(f"svc run: started the daemon for {loaded.path}", err=True)


class _ProgressLines:
    """One stderr line per service whose state changed (stdout is CMD's); the first
    message is where things stood when asked, as for a piped `svc up`."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, str]] | None = None

    def __call__(self, services: list[ServiceSnapshot]) -> None:
        from supervisord_lite.cli.render import progress_line  # lazy: keeps svc --help fast

        if self.seen is None:
            self.seen = {s.name: (s.state.value, s.reason) for s in services}
            return
        for s in services:
            key = (s.state.value, s.reason)
            if self.seen.get(s.name) != key:
                self.seen[s.name] = key
                click.echo(f"svc run: {progress_line(s)}", err=True)


class _TimedOut(Exception):
    pass


def _bring_up(platform: _Platform, timeout: float | None) -> list[str]:
    """Start the plan and wait until it is ready; the services ready now (CMD's variables)."""
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast
    from supervisord_lite.cli.render import failure_report, plural
    from supervisord_lite.core.protocol import ControlError, DaemonUnreachable
    from supervisord_lite.core.snapshot import ServiceSnapshot
    from supervisord_lite.core.states import GOOD_STATES

    deadline = None if timeout is None else time.monotonic() + timeout
    show = _ProgressLines()

    def progress(services: list[ServiceSnapshot]) -> None:
        show(services)
        if deadline is not None and time.monotonic() > deadline:
            raise _TimedOut

    try:
        result = client.up(
            platform.sock, platform.requested, wait=True, on_progress=progress, settle_timeout=timeout, answer_timeout=ANSWER_TIMEOUT
        )
    except _TimedOut:
        raise _PlatformDown(_not_ready_within(platform, timeout or 0.0)) from None
    except (ControlError, DaemonUnreachable) as exc:
        raise _PlatformDown(f"the daemon did not bring the platform up: {exc}") from None
    services = [ServiceSnapshot.from_dict(d) for d in result["services"]]
    if not result.get("all_ready"):
        click.echo(failure_report(services, result.get("tails", {})), err=True)
        bad = [s.name for s in services if s.state not in GOOD_STATES]
        raise _PlatformDown(f"the platform did not come up ({', '.join(bad)}); CMD was not run")
    snapshot = client.status(platform.sock)["services"]
    ready = [s["name"] for s in snapshot if s["state"] == "ready"]
    click.echo(f"svc run: {plural(len(ready), 'service')} ready ({len(platform.started)} started for this run)", err=True)
    return ready


def _not_ready_within(platform: _Platform, timeout: float) -> str:
    """Which needed services were not ready when the time was up, and why."""
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast
    from supervisord_lite.cli.render import progress_line
    from supervisord_lite.core.snapshot import ServiceSnapshot
    from supervisord_lite.core.states import GOOD_STATES

    try:
        services = [ServiceSnapshot.from_dict(d) for d in client.status(platform.sock)["services"]]
    except Exception:  # noqa: BLE001 - the timeout is the news; the details are a bonus
        services = []
    late = [progress_line(s) for s in services if s.name in platform.plan and s.state not in GOOD_STATES]
    return f"the platform was not ready within {timeout:g}s: " + ("; ".join(late) or "no answer from the daemon")


def _environment(loaded: Manifest, ready: list[str]) -> dict[str, str]:
    from supervisord_lite.core.runenv import run_environment

    found = run_environment(loaded, ready)
    for first, second in found.clashes:
        click.echo(f"svc run: warning: {first} and {second} map to the same variables; {second} gets none", err=True)
    return {**os.environ, **found.variables}


def _run_command(command: tuple[str, ...], env: dict[str, str], relay: _Relay) -> int:
    """Run CMD to its end; its exit code (128+N when a signal N ended it, as shells say)."""
    click.echo(f"svc run: running {' '.join(command)}", err=True)
    sys.stderr.flush()
    try:
        relay.child = subprocess.Popen(list(command), env=env)
    except FileNotFoundError:
        click.echo(f"svc run: {command[0]}: command not found", err=True)
        return 127
    except PermissionError:
        click.echo(f"svc run: {command[0]}: permission denied", err=True)
        return 126
    rc = relay.child.wait()
    relay.child = None
    code = 128 - rc if rc < 0 else rc
    click.echo(f"svc run: {command[0]} exited with code {code}", err=True)
    return code


def _put_back(platform: _Platform) -> None:
    """Stop what this run started (dependents first), and the daemon when it started it
    and nothing else runs; a signal meanwhile abandons it, saying what is left."""
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast
    from supervisord_lite.core.protocol import ControlError, DaemonUnreachable

    started = platform.started
    try:
        if started:
            stopped = client.down(platform.sock, tuple(started))["stopped"]
            if stopped:
                click.echo(f"svc run: stopped what it started: {', '.join(stopped)}", err=True)
        if platform.daemon_started and not _anything_running(platform.sock):
            _shutdown_daemon(platform.sock)
    except Interrupted:
        click.echo(
            f"svc run: clean-up abandoned; what it started may still run: {', '.join(started) or 'nothing'} "
            f"(stop it with `svc down -f {platform.manifest.path}`)",
            err=True,
        )
    except (ControlError, DaemonUnreachable) as exc:
        click.echo(f"svc run: could not stop what it started ({', '.join(started)}): {exc}", err=True)


def _anything_running(sock: Path) -> bool:
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast

    services: list[dict[str, Any]] = client.status(sock)["services"]
    return any(s["state"] not in ("stopped", "disabled", "deprecated", "failed", "exited") for s in services)


def _shutdown_daemon(sock: Path, timeout: float = 60.0) -> None:
    """End the daemon this run started, and wait until its process is gone."""
    import psutil  # lazy: keeps svc --help fast

    from supervisord_lite.cli import client

    pid = int(client.shutdown(sock)["pid"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:  # our child: gone, not yet reaped
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    click.echo(f"svc run: the daemon (pid {pid}) did not stop within {timeout:g}s", err=True)
