"""Stopping what a crashed predecessor left running, before this daemon starts anything.

What the state file records and which processes are survivors are ``host.recovery``'s
(the CLI's `svc down` without a daemon finds the very same set); this module only
adds the stopping, with the runtime's async process-tree termination (signal, wait,
SIGKILL after the stop timeout), in the order the daemon stops services.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import anyio
import structlog

from supervisord_lite.core.model import Manifest
from supervisord_lite.host.proctable import is_gone
from supervisord_lite.host.recovery import (
    Survivor,
    find_survivors,
    read_state,
    stop_settings,
    stop_steps,
    trusted_uids,
)
from supervisord_lite.runtime.termination import ProcessTree

log = structlog.get_logger("recovery")


@dataclass(frozen=True)
class Predecessor:
    """What a previous daemon leaves its successor: what to start again, and each
    service's restart count (so `svc status` does not forget a crash loop); and what
    stopping its survivors did, each service -> pids: ``stopped``, ``left`` (still there
    after SIGKILL) and ``not_ours`` (recorded pids that are someone else's now, never
    signalled)."""

    wanted: list[str]
    restarts: dict[str, int]
    stopped: dict[str, list[int]] = field(default_factory=dict)
    left: dict[str, list[int]] = field(default_factory=dict)
    not_ours: dict[str, list[int]] = field(default_factory=dict)

    def report(self) -> dict[str, dict[str, list[int]]]:
        """What the command that started this daemon tells its user (only what happened)."""
        kinds = {"stopped": self.stopped, "left": self.left, "not_ours": self.not_ours}
        return {kind: services for kind, services in kinds.items() if services}


async def reap_predecessor(manifest: Manifest) -> Predecessor:
    """Stop every process a predecessor left behind; return what it wanted running
    and the restart counts it recorded (of services the manifest still lists).

    Survivors cannot be supervised (their output pipe died with the old daemon), so
    they are stopped, by recorded pid, start time, user and session and by the
    SVC_INSTANCE marker every child inherits, never by name. What it wanted is read
    back only from a state file this daemon's user owns, and only with
    ``[supervisor] restore`` on.
    """
    sup = manifest.supervisor
    state = read_state(
        sup.state_file, on_untrusted=lambda why: log.warning("state file ignored", path=str(sup.state_file), reason=why)
    )
    owner = _owner(sup.state_file)
    if owner is not None and owner != os.geteuid():
        log.warning("not following a state file of another user", path=str(sup.state_file), owner_uid=owner)
    users = trusted_uids(*(spec.user for spec in manifest.services.values()))
    not_ours: dict[str, list[int]] = {}

    def refused(service: str, pid: int) -> None:
        log.warning("not stopping a recorded pid: it is not a service of ours", service=service, pid=pid)
        not_ours.setdefault(service, []).append(pid)

    found = await anyio.to_thread.run_sync(lambda: find_survivors(sup.state_dir, state, uids=users, on_refused=refused))
    stopped: dict[str, list[int]] = {}
    left: dict[str, list[int]] = {}
    for step in stop_steps(found, manifest):
        async with anyio.create_task_group() as tg:
            for survivor in step:
                tg.start_soon(_stop, survivor, manifest, stopped, left)
    if stopped:
        log.warning("stopped processes left by a previous daemon", services=stopped)
    if left:
        log.error("could not stop processes left by a previous daemon", services=left)
    wanted = state.wanted_services(manifest) if sup.restore else []
    restarts = {name: n for name, n in state.restarts.items() if name in manifest.services}
    return Predecessor(wanted, restarts, stopped, left, {name: sorted(pids) for name, pids in not_ours.items()})


async def _stop(survivor: Survivor, manifest: Manifest, stopped: dict[str, list[int]], left: dict[str, list[int]]) -> None:
    sig, timeout = stop_settings(manifest, survivor.service)
    tree = ProcessTree(instance_id=survivor.instance_id, create_time=min(p.create_time() for p in survivor.processes))
    tree.known.update((p.pid, p) for p in survivor.processes)
    tree.groups.update(survivor.groups)
    all_gone = await tree.terminate(sig, timeout)
    remaining = set() if all_gone else {pid for pid, proc in tree.known.items() if not is_gone(proc)}
    if gone := sorted((tree.seen | set(survivor.pids)) - remaining):
        stopped[survivor.service] = gone
    if remaining:
        left[survivor.service] = sorted(remaining)


def _owner(path: os.PathLike[str]) -> int | None:
    try:
        return os.lstat(path).st_uid
    except OSError:
        return None
