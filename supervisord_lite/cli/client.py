"""Finding, starting and asking the daemon of a manifest (the CLI side)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from supervisord_lite.core import paths
from supervisord_lite.core import protocol
from supervisord_lite.cli import transport
from supervisord_lite.core.model import Manifest
from supervisord_lite.host.files import tail_file
from supervisord_lite.host.recovery import leftover_services
from supervisord_lite.core.snapshot import SupervisorSnapshot


class DaemonStartError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def socket_of(manifest: Manifest) -> Path:
    return paths.socket_path_for(manifest.supervisor.state_dir)


def state_dir_for_path(manifest_path: Path) -> Path:
    """A manifest file's state_dir, even when the file no longer validates.

    `svc reload`, `status` and `down` must reach the running daemon when the file is
    broken (the daemon keeps the last good manifest and refuses the bad one itself);
    only ``[supervisor] state_dir`` is read here."""
    from supervisord_lite.core.toml_source import toml_data

    state_dir = ".svc"
    try:
        data = toml_data(manifest_path)  # bounded: no file makes this recurse or take long
        value = data.get("supervisor", {}).get("state_dir", state_dir)
        if isinstance(value, str) and value and "\0" not in value:
            state_dir = value
    except (OSError, ValueError, AttributeError):
        pass
    return manifest_path.resolve().parent / state_dir


def socket_for_path(manifest_path: Path) -> Path:
    return paths.socket_path_for(state_dir_for_path(manifest_path))


def leftovers_of(manifest_path: Path) -> list[str]:
    """Services a dead daemon left running (found by their instance marker: the state
    file may lag the last spawn by a moment)."""
    return leftover_services(state_dir_for_path(manifest_path))


def fetch_snapshot(manifest: Manifest, timeout: float = 5.0) -> SupervisorSnapshot | None:
    """The daemon's live state, or None when no daemon runs for this manifest."""
    try:
        result = transport.call(socket_of(manifest), "status", {}, timeout=timeout)
    except (protocol.DaemonUnreachable, protocol.ControlError):
        return None
    return SupervisorSnapshot.from_dict(result)


def daemon_log_path(manifest: Manifest) -> Path:
    return manifest.supervisor.state_dir / "daemon.log"


def ensure_daemon(manifest: Manifest, timeout: float = 20.0) -> bool:
    """Make sure a daemon serves this manifest; start one in the background if not.

    Returns True when this call started it. Two callers racing is fine: the daemon
    takes an exclusive lock, the loser exits, and both callers end up talking to the
    winner.
    """
    sock = socket_of(manifest)
    try:
        transport.call(sock, "ping", {}, timeout=1.0)
        return False
    except protocol.DaemonUnreachable:
        pass
    except protocol.ControlError as exc:
        if exc.code == 3:  # a daemon runs but will not serve us (another user's): starting a second cannot help
            raise DaemonStartError(str(exc), 3) from None
    state_dir = manifest.supervisor.state_dir
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(daemon_log_path(manifest), "ab")
    except OSError as exc:
        raise DaemonStartError(f"{manifest.path}: supervisor.state_dir: cannot write to {state_dir}: {exc.strerror or exc}", 2) from None
    with log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "supervisord_lite.daemon", "-f", str(manifest.path.resolve()), "--json-logs"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            cwd=str(manifest.path.resolve().parent),
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + timeout
    child_gone_at: float | None = None
    while time.monotonic() < deadline:
        if transport.ping(sock, timeout=0.5):
            return child.poll() is None
        code = child.poll()
        if code is not None:
            # it may have lost the race to another daemon that is starting: give that one a moment
            child_gone_at = child_gone_at or time.monotonic()
            if time.monotonic() - child_gone_at > 5.0 or code not in (0, 1):
                raise DaemonStartError(_startup_failure(manifest, code), 2 if code == 2 else 1)
        time.sleep(0.02)
    raise DaemonStartError(f"the daemon did not answer within {timeout:g}s; see {daemon_log_path(manifest)}")


def _startup_failure(manifest: Manifest, code: int) -> str:
    lines = tail_file(daemon_log_path(manifest), 20)
    said = [line.removeprefix("svc daemon: ") for line in lines if line.startswith("svc daemon: ")]
    if said:  # the daemon's own words for people; the JSON log lines are for machines
        return f"the daemon could not start: {said[-1]}"
    details = "\n".join(f"  {line}" for line in lines[-10:])
    return f"the daemon could not start (exit {code}); last lines of {daemon_log_path(manifest)}:\n{details}"


def call(manifest: Manifest, op: str, args: dict[str, Any] | None = None, timeout: float | None = 30.0) -> Any:
    return transport.call(socket_of(manifest), op, args or {}, timeout=timeout)
