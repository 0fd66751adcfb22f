"""Starting a manifest's daemon in the background (`svc up`, `svc restart`, `svc run`).

A cold `svc up` waits for a new daemon: its interpreter, its imports and its manifest
take longer than everything the command line does before it asks for the services.
So the console script starts the daemon as soon as it knows the manifest file
(``start_early``, before click and the manifest model are even imported), and the
command claims that daemon when it gets to ``ensure_daemon``. Should the command fail
before (an invalid manifest), ``abandon_early`` ends the early daemon and removes the
state folder it made, so a failed command leaves nothing behind.

The new daemon, not the command line, stops what a dead predecessor left running
(holding the lock, before it serves anyone); what it stopped comes back in its answer
to ``ping`` (``left_by_predecessor``) for the command that started it to tell.
"""

from __future__ import annotations

import contextlib
import enum
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from supervisord_lite.cli import transport
from supervisord_lite.cli.client import ping, socket_finder, socket_in, socket_of, state_dir_for_path
from supervisord_lite.core import paths
from supervisord_lite.core.exitcodes import ExitCode
from supervisord_lite.core.protocol import ControlError, DaemonUnreachable

if TYPE_CHECKING:
    from supervisord_lite.core.model import Manifest

#: How often ensure_daemon asks whether the new daemon serves yet: a refused connect
#: costs microseconds, and every millisecond here is added to each cold `svc up`.
DAEMON_POLL_INTERVAL = 0.002
#: How long an abandoned early daemon gets to exit by itself (it read the same invalid
#: manifest, and says so in its log within milliseconds) before it is sent SIGTERM.
ABANDON_GRACE = 10.0


class DaemonStartError(Exception):
    def __init__(self, message: str, code: int = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.code = code


class DaemonFound(enum.Enum):
    """How ``ensure_daemon`` found a daemon serving the manifest."""

    RUNNING = "running"  # it was already there
    STARTED = "started"  # the daemon this call spawned won the lock and serves
    JOINED = "joined"  # this call spawned one, but another caller's won the race; it serves


class Reached(NamedTuple):
    """The daemon ``ensure_daemon`` reached, and (when this call started it) what it found
    a dead predecessor had left: ``stopped``, ``left`` (would not stop) and ``not_ours``
    (recorded pids that are no longer ours, never signalled), each service -> pids.
    (Tuples, not dataclasses, here: importing dataclasses would delay the early start.)"""

    found: DaemonFound
    left_by_predecessor: Mapping[str, Mapping[str, Sequence[int]]] = MappingProxyType({})


def daemon_log_path(manifest: Manifest) -> Path:
    return manifest.supervisor.state_dir / paths.DAEMON_LOG_NAME


def daemon_argv(main_file: Path, overlays: Sequence[Path] = ()) -> list[str]:
    return [
        sys.executable, "-m", "supervisord_lite.daemon", "-f", str(main_file.resolve()),
        *(arg for overlay in overlays for arg in ("-f", str(overlay.resolve()))),
        "--json-logs",
    ]  # fmt: skip


# ----------------------------------------------------------------------------- the early start


class _EarlyDaemon(NamedTuple):
    argv: list[str]
    child: subprocess.Popen[bytes]
    state_dir: Path
    made_state_dir: bool  # the early start created it: an abandon removes it again


_early: _EarlyDaemon | None = None


def start_early(main_file: Path) -> None:
    """Spawn the daemon of ``main_file`` (a manifest given alone, no overlays) unless one
    answers, without validating the manifest: the daemon validates it itself, and the
    command goes on to do the same. Anything unusual (the state folder cannot be made,
    a listener that is not a daemon of ours) is left for the command's own start to
    report: this only saves time, it never decides."""
    global _early
    if _early is not None:
        return
    from supervisord_lite.host import statedir  # lazy: only a start needs it

    try:
        state_dir = state_dir_for_path(main_file)
        ping(socket_in(state_dir), timeout=1.0)
        return  # a daemon serves it
    except DaemonUnreachable:
        pass
    except Exception:  # noqa: BLE001 (a refusal, an untrusted listener, an unreadable file: the command says it)
        return
    made = not os.path.lexists(state_dir)
    argv = daemon_argv(main_file)
    try:
        child = _spawn(argv, state_dir, main_file)
    except (statedir.UnsafeStateDir, OSError):
        return
    _early = _EarlyDaemon(argv, child, state_dir, made)


def started_early() -> bool:
    """Did this command start a daemon early, not claimed yet?"""
    return _early is not None


def abandon_early(grace: float = ABANDON_GRACE) -> None:
    """The command failed before it claimed the early daemon (its manifest does not
    validate): wait up to ``grace`` for that daemon to give up as well, end it if it
    does not, and remove the state folder the early start made (with the log that says why)."""
    global _early
    early, _early = _early, None
    if early is None:
        return
    try:
        early.child.wait(timeout=grace)
    except subprocess.TimeoutExpired:  # the file changed in between, and it serves: ours to end
        early.child.terminate()
        try:
            early.child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            early.child.kill()
            early.child.wait()
    if early.made_state_dir:
        with contextlib.suppress(OSError):
            os.unlink(early.state_dir / paths.DAEMON_LOG_NAME)
        with contextlib.suppress(OSError):
            os.rmdir(early.state_dir)  # only when nothing else is in it


def _claim_early(argv: list[str], state_dir: Path) -> subprocess.Popen[bytes] | None:
    """The early daemon, when it was started for this very daemon command line and
    state folder (else it is ended, and the caller starts its own)."""
    global _early
    if _early is None:
        return None
    if _early.argv != argv or _early.state_dir != state_dir:
        abandon_early(grace=0)
        return None
    child, _early = _early.child, None
    return child


# ----------------------------------------------------------------------------- ensure_daemon


def ensure_daemon(manifest: Manifest, timeout: float = 20.0, meanwhile: Callable[[], None] | None = None) -> Reached:
    """Make sure a daemon serves this manifest; start one in the background if not.

    Callers racing is fine: each spawns a daemon, the daemons take an exclusive lock,
    the losers exit, and every caller ends up talking to the winner. Which caller
    started it is told by the pid the serving daemon reports: exactly one gets
    ``STARTED``, the others ``JOINED``.

    ``meanwhile`` runs exactly once (whatever happens): while a new daemon starts, so
    that work which need not wait for it costs no time; at once when none is started.
    """
    pending = [meanwhile] if meanwhile is not None else []

    def run_pending() -> None:
        while pending:
            pending.pop()()

    try:
        return _ensure_daemon(manifest, timeout, run_pending)
    finally:
        run_pending()


def _ensure_daemon(manifest: Manifest, timeout: float, meanwhile: Callable[[], None]) -> Reached:
    from supervisord_lite.host import statedir

    argv = daemon_argv(manifest.path, manifest.overlays)
    child = _claim_early(argv, manifest.supervisor.state_dir)  # it may already serve: the wait below tells it by its pid
    if child is None:
        try:
            ping(socket_of(manifest), timeout=1.0)
            return Reached(DaemonFound.RUNNING)
        except DaemonUnreachable:
            pass
        except transport.UntrustedSocket as exc:  # never start a daemon beside a listener we cannot trust
            raise DaemonStartError(str(exc), exc.code) from None
        except ControlError as exc:
            if exc.code == ExitCode.NO_DAEMON:  # a daemon runs but will not serve us (another user's): starting a second cannot help
                raise DaemonStartError(str(exc), ExitCode.NO_DAEMON) from None
        try:
            child = _spawn(argv, manifest.supervisor.state_dir, manifest.path)
        except statedir.UnsafeStateDir as exc:
            raise DaemonStartError(f"{manifest.path}: supervisor.state_dir: {exc}", exc.code) from None
        except OSError as exc:
            message = f"{manifest.path}: supervisor.state_dir: cannot write to {manifest.supervisor.state_dir}: {exc.strerror or exc}"
            raise DaemonStartError(message, ExitCode.USAGE) from None
    meanwhile()
    current_socket = socket_finder(manifest.supervisor.state_dir)
    deadline = time.monotonic() + timeout
    child_gone_at: float | None = None
    while time.monotonic() < deadline:
        answer = _serving(current_socket())
        if answer is not None:
            if answer["pid"] != child.pid:
                return Reached(DaemonFound.JOINED)
            return Reached(DaemonFound.STARTED, _left_by_predecessor(answer))
        code = child.poll()
        if code is not None and not (code == ExitCode.FAILED and _lock_holder_alive(manifest)):
            # it may have lost the race to a daemon that has not written its pid yet: give that one a moment
            child_gone_at = child_gone_at or time.monotonic()
            if time.monotonic() - child_gone_at > 5.0 or code not in (ExitCode.OK, ExitCode.FAILED):
                exit_code = ExitCode.USAGE if code == ExitCode.USAGE else ExitCode.FAILED
                raise DaemonStartError(_startup_failure(manifest, code), exit_code)
        time.sleep(DAEMON_POLL_INTERVAL)
    raise DaemonStartError(f"the daemon did not answer within {timeout:g}s; see {daemon_log_path(manifest)}")


def _spawn(argv: list[str], state_dir: Path, main_file: Path) -> subprocess.Popen[bytes]:
    """The daemon, in a session of its own, writing to ``daemon.log`` in ``state_dir``
    (made private first). :raises statedir.UnsafeStateDir, OSError:"""
    from supervisord_lite.host import statedir

    statedir.ensure_private_dir(state_dir)
    log_file: IO[bytes] = os.fdopen(statedir.open_file(state_dir / paths.DAEMON_LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")
    with log_file:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            cwd=str(main_file.resolve().parent),
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _serving(sock: Path) -> dict[str, Any] | None:
    """The ping answer of the daemon on ``sock`` (None while none answers); a listener
    that cannot be trusted ends the wait with its message."""
    try:
        answer = ping(sock, timeout=0.5)
        return answer if isinstance(answer.get("pid"), int) else None
    except transport.UntrustedSocket as exc:
        raise DaemonStartError(str(exc), exc.code) from None
    except (DaemonUnreachable, ControlError, AttributeError):
        return None


def _left_by_predecessor(answer: dict[str, Any]) -> dict[str, dict[str, list[int]]]:
    """The daemon's report of what a dead predecessor left, with anything malformed dropped."""
    report = answer.get("left_by_predecessor")
    if not isinstance(report, dict):
        return {}
    clean: dict[str, dict[str, list[int]]] = {}
    for kind in ("stopped", "left", "not_ours"):
        services = report.get(kind)
        if isinstance(services, dict):
            clean[kind] = {
                str(name): [pid for pid in pids if isinstance(pid, int)]
                for name, pids in services.items()
                if isinstance(pids, list)
            }
    return clean


def _lock_holder_alive(manifest: Manifest) -> bool:
    """Does the daemon that holds the manifest's lock (its pid is in the lock file) still
    run? Then ours lost the race to it, and it is still starting: wait for it."""
    from supervisord_lite.host.proctable import is_running  # lazy: loads psutil
    from supervisord_lite.host.recovery import lock_holder

    pid = lock_holder(manifest.supervisor.state_dir)
    return pid is not None and is_running(pid)


def _startup_failure(manifest: Manifest, code: int) -> str:
    from supervisord_lite.host.files import tail_file

    lines = tail_file(daemon_log_path(manifest), 20)
    said = [line.removeprefix("svc daemon: ") for line in lines if line.startswith("svc daemon: ")]
    if said:  # the daemon's own words for people; the JSON log lines are for machines
        return f"the daemon could not start: {said[-1]}"
    details = "\n".join(f"  {line}" for line in lines[-10:])
    return f"the daemon could not start (exit {code}); last lines of {daemon_log_path(manifest)}:\n{details}"
