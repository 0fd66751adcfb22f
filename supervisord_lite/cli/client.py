"""Finding, starting and asking the daemon of a manifest (the CLI side).

Every request the CLI makes has its function here (``ping``, ``status``, ``up``,
``restart``, ``down``, ``send_signal``, ``reload``, ``shutdown``, ``watch``), built on
``transport.call``/``request``: the op names and their arguments are written
once. Each takes the daemon's socket and raises ``DaemonUnreachable`` when no
daemon answers, ``ControlError`` (with the exit code) when it refuses.

`svc status` and `svc down` pay for every import here at each call: the manifest
model, the snapshots, the recovery code (psutil) and subprocess are imported inside
the functions that need them.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisord_lite.cli import transport
from supervisord_lite.core import paths
from supervisord_lite.core.protocol import ControlError, DaemonUnreachable
from supervisord_lite.host import socketdir

if TYPE_CHECKING:
    from supervisord_lite.core.model import Manifest
    from supervisord_lite.core.snapshot import ServiceSnapshot, SupervisorSnapshot
    from supervisord_lite.host.recovery import StopReport

#: What ``up`` and ``restart`` call with the services whose state changed, as they wait.
OnProgress = Callable[[list["ServiceSnapshot"]], None]
#: The same, with each service as the daemon sent it (a dict), for a caller that decodes only what it shows.
OnProgressSent = Callable[[list[dict[str, Any]]], None]


# ----------------------------------------------------------------------------- the requests


def ping(sock: Path, *, timeout: float = 1.0) -> dict[str, Any]:
    """The daemon's pid and manifest path."""
    return transport.call(sock, "ping", {}, timeout=timeout)


def is_serving(sock: Path, *, timeout: float = 1.0) -> bool:
    """True when a daemon on ``sock`` answers (one that refuses this user, or a listener
    this user must not trust, counts as none)."""
    try:
        ping(sock, timeout=timeout)
    except (DaemonUnreachable, ControlError):
        return False
    return True


def status(sock: Path, *, timeout: float = 10.0) -> dict[str, Any]:
    """The daemon's snapshot as it sent it (``svc status --json`` prints it as is)."""
    return transport.call(sock, "status", {}, timeout=timeout)


def _progress_of(on_progress: OnProgress | None, as_sent: OnProgressSent | None) -> Callable[[Any], None]:
    if as_sent is not None:
        return as_sent
    from supervisord_lite.core.snapshot import ServiceSnapshot  # lazy: see the module's docstring

    assert on_progress is not None, "up and restart report progress to on_progress or on_progress_sent"
    return lambda payload: on_progress([ServiceSnapshot.from_dict(d) for d in payload])


def up(
    sock: Path,
    names: tuple[str, ...],
    *,
    wait: bool,
    on_progress: OnProgress | None = None,
    on_progress_sent: OnProgressSent | None = None,
    settle_timeout: float | None = None,
    answer_timeout: float | None = None,
) -> dict[str, Any]:
    """Start ``names`` (every active service when empty); with ``wait``, return once they
    settled, or once ``settle_timeout`` seconds passed (the daemon's bound from the manifest
    when None): the answer then names what had not settled. ``answer_timeout`` bounds the
    silence between two messages (the daemon sends one at least every second). Each update
    goes to ``on_progress`` as snapshots, or to ``on_progress_sent`` as sent."""
    args: dict[str, Any] = {"names": list(names), "wait": wait}
    if settle_timeout is not None:
        args["timeout"] = settle_timeout
    progress = _progress_of(on_progress, on_progress_sent)
    return transport.call(sock, "up", args, timeout=answer_timeout, on_progress=progress)


def restart(
    sock: Path,
    names: tuple[str, ...],
    *,
    dependents: bool,
    on_progress: OnProgress | None = None,
    on_progress_sent: OnProgressSent | None = None,
) -> dict[str, Any]:
    """Stop then start ``names`` (and what depends on them with ``dependents``); return once
    they settled. Updates go to ``on_progress`` or ``on_progress_sent``, as for ``up``."""
    args = {"names": list(names), "dependents": dependents}
    progress = _progress_of(on_progress, on_progress_sent)
    return transport.call(sock, "restart", args, timeout=None, on_progress=progress)


def down(sock: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """Stop ``names`` (every service when empty) and what depends on them."""
    return transport.call(sock, "down", {"names": list(names)}, timeout=None)


def send_signal(sock: Path, names: tuple[str, ...], signal_name: str) -> dict[str, Any]:
    """Signal each service's process group; which got it and which were not running."""
    return transport.call(sock, "signal", {"names": list(names), "signal": signal_name})


def reload(sock: Path) -> dict[str, list[str]]:
    """Make the daemon re-read its manifest; what was added, removed, changed."""
    return transport.call(sock, "reload", {}, timeout=None)


def shutdown(sock: Path) -> dict[str, Any]:
    """Ask the daemon to stop every service and exit; its pid (it is still stopping)."""
    return transport.call(sock, "shutdown", {})


def watch(sock: Path, *, usage: bool) -> Iterator[SupervisorSnapshot]:
    """The daemon's snapshot at every change, for as long as it runs; ends when it closes the stream."""
    from supervisord_lite.core.snapshot import SupervisorSnapshot  # lazy: see the module's docstring

    # the daemon sends a snapshot or a heartbeat at least every 2 s: silence for 15 s means it hangs
    for message in transport.request(sock, "watch", {"usage": usage}, timeout=15.0):
        if message.get("done"):
            transport.final_result(message)  # raises when the daemon refused
            return
        progress = message.get("progress")
        if isinstance(progress, dict):
            yield SupervisorSnapshot.from_dict(progress)


# ----------------------------------------------------------------------------- finding and starting the daemon


def socket_of(manifest: Manifest) -> Path:
    return socket_in(manifest.supervisor.state_dir)


def socket_in(state_dir: Path) -> Path:
    """Where this state_dir's daemon listens (or would): ``paths.socket_candidates``, looked up."""
    return socket_finder(state_dir)()


def socket_finder(state_dir: Path) -> Callable[[], Path]:
    """``socket_in(state_dir)`` for a caller that asks again and again (waiting for a new
    daemon): the candidates are worked out once, only looked up at each call."""
    daemon_would_listen = socketdir.listen_path(paths.socket_candidates(state_dir))
    candidates = paths.socket_candidates(state_dir, lookup=True)
    return lambda: socketdir.locate(candidates, default=daemon_would_listen)


def state_dir_for_path(manifest_path: Path) -> Path:
    """A manifest file's state_dir, even when the file no longer validates.

    `svc reload`, `status` and `down` must reach the running daemon when the file is
    broken (the daemon keeps the last good manifest and refuses the bad one itself);
    only ``[supervisor] state_dir`` (and ``instance``) is read here, from the file and then
    the ``svc.local.toml`` beside it (which may set its own), without the manifest loader:
    every `svc status` and `svc down` comes this way."""
    state_dir = ".svc"
    configured = 0
    local = manifest_path.with_name(paths.local_name(manifest_path.name))
    for index, file in enumerate((manifest_path, local)):
        try:
            if index and not file.exists():
                continue
            table = _supervisor_table(file)
            value = table.get("state_dir", state_dir)
            if isinstance(value, str) and value and "\0" not in value:
                state_dir = value
            number = table.get("instance", configured)
            if isinstance(number, int) and not isinstance(number, bool) and number >= 0:
                configured = number
        except (OSError, ValueError, AttributeError, RecursionError):
            pass
    instance = configured
    if os.environ.get(paths.INSTANCE_ENV_VAR, "").strip():
        from supervisord_lite.core.instances import InstanceError, requested_instance  # lazy: loads the model

        with contextlib.suppress(InstanceError):
            instance = requested_instance(os.environ, configured)
    return paths.instance_state_dir(manifest_path.resolve().parent / state_dir, instance)


#: A table header naming ``services`` (``[services.api]``, ``[[services]]``, ``[ "services" ]``).
_SERVICES_HEADER = re.compile(r"^[ \t]*\[\[?[ \t]*[\"']?services\b", re.MULTILINE)
#: A table header that spells its name with an escape, or names the supervisor table.
_SUPERVISOR_HEADER = re.compile(r"^[ \t]*\[[^\n]*(\\|supervisor)", re.MULTILINE)


def _supervisor_table(file: Path) -> dict[str, Any]:
    """The ``[supervisor]`` table of a manifest file ({} when it has none).

    A big manifest is mostly its services, and parsing 1000 of them costs more than the
    rest of a `svc down`: when the text before the first ``[services...]`` header parses
    and no later header can name the supervisor table, only that text is parsed.
    Bounded like the loader: at most ``MAX_FILE_BYTES`` are read; a deeply nested
    file ends in RecursionError, which the caller takes as "nothing set"."""
    import tomllib  # lazy: only this lookup needs it

    from supervisord_lite.core.limits import MAX_FILE_BYTES

    with file.open("rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"{file} is larger than {MAX_FILE_BYTES} bytes")
    text = raw.decode("utf-8")
    cut = _SERVICES_HEADER.search(text)
    if cut is not None and cut.start() > 0 and not _SUPERVISOR_HEADER.search(text, cut.start()):
        with contextlib.suppress(tomllib.TOMLDecodeError):  # the cut fell inside a string: parse it all
            return _table(tomllib.loads(_within_bounds(text[: cut.start()])))
    return _table(tomllib.loads(_within_bounds(text)))


def _within_bounds(text: str) -> str:
    """``text`` when the manifest's bounds allow parsing it (tomllib on a hostile shape,
    such as a dotted key of 1 MiB, parses for minutes). :raises ValueError:"""
    if plainly_within_bounds(text):
        return text
    from supervisord_lite.core.toml_bounds import check_toml_bounds  # lazy: only a text that may break a bound needs it

    if (overflow := check_toml_bounds(text)) is not None:
        raise ValueError(overflow.message)
    return text


def plainly_within_bounds(text: str) -> bool:
    """True when ``text`` cannot break the bounds ``check_toml_bounds`` checks, by counting
    alone (the usual ``[supervisor]`` table, read by every `svc status` and `svc down`, is
    cleared without importing the scanner): a key of more than MAX_KEY_PARTS parts needs
    that many dots, nesting deeper than MAX_NESTING more brackets than that, and too many
    keys or commas more characters than MAX_COMMAS."""
    from supervisord_lite.core.limits import MAX_COMMAS, MAX_CONTAINERS, MAX_KEY_PARTS, MAX_KEYS, MAX_NESTING

    return (
        len(text) <= min(MAX_COMMAS, MAX_KEYS)
        and text.count(".") < MAX_KEY_PARTS
        and text.count("[") + text.count("{") <= min(MAX_NESTING, MAX_CONTAINERS)
    )


def _table(data: dict[str, Any]) -> dict[str, Any]:
    table = data.get("supervisor", {})
    return table if isinstance(table, dict) else {}


def socket_for_path(manifest_path: Path) -> Path:
    return socket_in(state_dir_for_path(manifest_path))


def leftovers_of(manifest_path: Path) -> list[str]:
    """Services a dead daemon left running (by the state file's records, their sessions
    and their instance marker: the file may lag the last spawn by a moment)."""
    from supervisord_lite.host.recovery import leftover_services  # lazy: loads psutil

    return leftover_services(state_dir_for_path(manifest_path))


class DaemonBusy(Exception):
    """A live daemon holds the manifest's lock (starting, stopping, or hung) but does not answer."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(f"a daemon (pid {pid if pid else '?'}) holds the lock but does not answer")
        self.pid = pid


class CannotInspect(Exception):
    """The state file is there but this user may not read it: what a dead daemon left
    cannot be told, so nothing may be claimed about it."""


def stop_leftovers(
    state_dir: Path,
    manifest: Manifest | None,
    services: Collection[str] | None = None,
    *,
    unwant: bool = False,
    wait: float = 0.0,
) -> StopReport:
    """With no daemon: stop what the last one left running (only ``services`` when given),
    holding the daemon lock so that none starts meanwhile, and update the state file:
    the stopped records go, and with ``unwant`` (a `svc down`) the services leave the
    wanted set, so the next daemon (at boot) does not start them again.

    :raises DaemonBusy: a live daemon holds the lock for more than ``wait`` seconds
    """
    from supervisord_lite.host.recovery import (  # lazy: loads psutil
        STATE_FILE,
        daemon_lock,
        forget_stopped,
        lock_holder,
        read_owned_state,
        stop_survivors,
        trusted_owners,
    )

    with daemon_lock(state_dir, wait=wait) as free:
        if not free:
            raise DaemonBusy(lock_holder(state_dir))
        path = state_dir / STATE_FILE
        if os.path.lexists(path) and not os.access(path, os.R_OK, follow_symlinks=False):
            owner = socketdir.describe_uid(os.lstat(path).st_uid)
            raise CannotInspect(f"cannot read {path} (owned by {owner}): run svc as that user to stop what it left")
        state = read_owned_state(path, trusted_owners())
        report = stop_survivors(state_dir, state, manifest, services)
        scope = {*state.processes, *state.wanted, *report.stopped} if services is None else set(services)
        with contextlib.suppress(OSError):  # a file this user may not write: the stop itself happened
            forget_stopped(path, scope - set(report.left), scope if unwant else ())
    return report


def fetch_snapshot(manifest: Manifest, timeout: float = 5.0) -> SupervisorSnapshot | None:
    """The daemon's live state, or None when no daemon runs for this manifest."""
    from supervisord_lite.core.snapshot import SupervisorSnapshot  # lazy: see the module's docstring

    try:
        return SupervisorSnapshot.from_dict(status(socket_of(manifest), timeout=timeout))
    except (DaemonUnreachable, ControlError):
        return None
