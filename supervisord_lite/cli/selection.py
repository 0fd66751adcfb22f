"""The services a command's words select, said the same way by every command.

``select_services`` turns ``svc up @backend infra api`` into service names with
``core.selectors.resolve``, and exits 2 with its message when a word is unknown or
ambiguous. ``running_services`` is what ``svc restart`` with no name restarts.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from supervisord_lite.cli.app import fail, load_or_fail, manifest_overlays, warn_not_validating
from supervisord_lite.core.exitcodes import ExitCode
from supervisord_lite.core.selectors import GROUP_PREFIX, SERVICE_PREFIX, TIER_PREFIX, SelectorError, resolve
from supervisord_lite.core.states import ServiceState

if TYPE_CHECKING:
    from supervisord_lite.core.model import Manifest
    from supervisord_lite.core.snapshot import ServiceSnapshot, SupervisorSnapshot

#: What "running" means for `svc restart` with no name: someone asked for it and it has not given up.
RUNNING = frozenset(
    {ServiceState.WAITING, ServiceState.STARTING, ServiceState.READY, ServiceState.UNHEALTHY, ServiceState.BACKOFF}
)


def names_of(manifest: Manifest, words: Sequence[str], *, startable: bool = False) -> tuple[str, ...]:
    """The services ``words`` select in ``manifest`` (none for no words); exit 2 when one
    selects nothing or is ambiguous."""
    if not words:
        return ()
    try:
        return tuple(resolve(manifest, words, startable=startable))
    except SelectorError as exc:
        fail(str(exc), ExitCode.USAGE)


def select_services(
    path: Path, words: Sequence[str], *, startable: bool = False, warn: bool = True
) -> tuple[str, ...]:
    """The services ``words`` select in the manifest at ``path``.

    While the file does not validate (the daemon keeps the last good manifest), plain
    service names go through as they are, for the daemon to check; a group or tier
    selector needs the file, so its problems are printed and the exit is 2. ``warn=False``
    leaves the "does not validate" warning to a caller that gives it anyway."""
    if not words:
        return ()
    from supervisord_lite.core.manifest import load_manifest  # lazy: keeps svc --help fast
    from supervisord_lite.core.problems import ManifestError

    try:
        manifest = load_manifest(path, manifest_overlays())
    except ManifestError as exc:
        if path.exists() and not any(_is_set_syntax(w) for w in words):
            if warn:
                warn_not_validating(path, exc)
            return tuple(dict.fromkeys(words))
        load_or_fail(path)  # says what is wrong and exits 2
        raise
    return names_of(manifest, words, startable=startable)


def _is_set_syntax(word: str) -> bool:
    return word.startswith((GROUP_PREFIX, SERVICE_PREFIX, TIER_PREFIX))


def running_services(snapshot: SupervisorSnapshot) -> tuple[str, ...]:
    """The services that run or are on their way, in the manifest's order."""
    return tuple(s.name for s in snapshot.services if s.state in RUNNING)


def filter_services(path: Path, services: list[dict[str, Any]], selected: Collection[str]) -> list[dict[str, Any]]:
    """The daemon's service entries (``status --json``) that were selected; exit 2 when one
    is not among them (the daemon runs the manifest as last loaded)."""
    missing = [name for name in selected if name not in {s["name"] for s in services}]
    if missing:
        fail(
            f"the daemon of {path} runs no service named {', '.join(map(repr, missing))} "
            "(after adding a service, run `svc reload`)",
            ExitCode.USAGE,
        )
    return [s for s in services if s["name"] in selected]


def restart_targets(manifest: Path | None) -> tuple[Path, Path, tuple[str, ...]]:
    """What `svc restart` with no name restarts: (manifest path, socket, every running
    service). With no daemon or nothing running, say so and exit 0: there is nothing to do."""
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast
    from supervisord_lite.cli.app import daemon_errors, require_manifest_file, resolve_manifest_path
    from supervisord_lite.core.snapshot import SupervisorSnapshot

    path = resolve_manifest_path(manifest)
    require_manifest_file(path)
    sock = client.socket_for_path(path)
    with daemon_errors(path, when_absent=partial(_nothing_running, path)):
        snapshot = SupervisorSnapshot.from_dict(client.status(sock, timeout=10))
    names = running_services(snapshot)
    if not names:
        _nothing_running(path)
    return path, sock, names


def _nothing_running(path: Path) -> NoReturn:
    click.echo(f"nothing is running for {path}: nothing to restart")
    sys.exit(ExitCode.OK)


def guide_of(
    manifest: Manifest, words: Sequence[str], live: Mapping[str, ServiceSnapshot] | None, *, source: str
) -> dict[str, Any]:
    """The port guide (``core.portguide``) of the services ``words`` select: their rows, in
    the tiers that keep one (all of it for no words; reservations are always shown whole)."""
    from supervisord_lite.core import portguide  # lazy: keeps svc --help fast

    guide = portguide.build_guide(manifest, live, source=source)
    if not words:
        return guide
    chosen = set(names_of(manifest, words))
    for tier in guide["tiers"]:
        tier["services"] = [row for row in tier["services"] if row["service"] in chosen]
    guide["tiers"] = [tier for tier in guide["tiers"] if tier["services"]]
    return guide
