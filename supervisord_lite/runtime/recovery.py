"""Stopping what a crashed predecessor left running, before this daemon starts anything.

What the state file records and what counts as a survivor are ``host.recovery``'s;
this module only adds the stopping, which needs the runtime's process-tree
termination (signal, wait, SIGKILL after the stop timeout).
"""

from __future__ import annotations

import signal

import anyio
import structlog

from supervisord_lite.core.model import Manifest
from supervisord_lite.host.recovery import read_state, survivors, trusted_uids
from supervisord_lite.runtime.termination import stop_orphans

log = structlog.get_logger("recovery")

DEFAULT_STOP_SIGNAL = signal.SIGTERM
DEFAULT_STOP_TIMEOUT = 10.0  # for a survivor whose service the manifest no longer lists


async def reap_predecessor(manifest: Manifest) -> list[str]:
    """Stop every process a crashed predecessor left behind; return what it wanted running.

    Survivors cannot be supervised (their output pipe died with the old daemon), so
    they are stopped, by recorded pid and start time and by the SVC_INSTANCE marker
    that every child inherits, never by name; the services they belonged to are then
    started again by this daemon. A state file the daemon's uid does not own is
    ignored, and a recorded pid is stopped only when it runs as the daemon's uid or the
    service's ``user`` and carries its marker or leads its own session.
    """
    state_file = manifest.supervisor.state_file
    state = read_state(state_file, on_untrusted=lambda why: log.warning("state file ignored", path=str(state_file), reason=why))
    for name, record in state.processes.items():
        spec = manifest.services.get(name)
        stopped = await stop_orphans(
            instance_id=record.instance_id,
            pid=record.pid,
            create_time=record.create_time,
            sig=spec.stop_signal if spec else DEFAULT_STOP_SIGNAL,
            timeout=spec.stop_timeout if spec else DEFAULT_STOP_TIMEOUT,
            uids=trusted_uids(spec.user if spec else None),
        )
        if stopped:
            log.warning("stopped processes left by a previous daemon", service=name, pids=stopped)
    # and any process of ours the file does not name (the daemon died between two writes)
    leftovers = await anyio.to_thread.run_sync(survivors, manifest.supervisor.state_dir)
    any_user = trusted_uids(*(spec.user for spec in manifest.services.values()))
    for instance_id in leftovers:
        stopped = await stop_orphans(instance_id=instance_id, sig=DEFAULT_STOP_SIGNAL, timeout=DEFAULT_STOP_TIMEOUT, uids=any_user)
        if stopped:
            log.warning("stopped processes left by a previous daemon", instance=instance_id, pids=stopped)
    return state.wanted_services(manifest)
