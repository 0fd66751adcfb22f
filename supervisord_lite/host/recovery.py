"""What a daemon leaves for its successor, and what a successor finds.

The state file (``state_dir/state.json``) records the daemon's pid, what was wanted
and every running service's pid, group, start time and instance marker. It is the
successor's guide, not its only one: every service process carries
``SVC_INSTANCE=<prefix><id>`` (the prefix derived from the state_dir), so a daemon
that died between two writes still leaves nothing a successor cannot find.

The record format lives here, next to its reader, so that what the daemon writes
and what its successor reads back cannot drift apart. Stopping the survivors needs
the runtime's process-tree termination: ``runtime.recovery`` does that part.
"""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from supervisord_lite.core.model import Manifest
from supervisord_lite.core.paths import instance_prefix
from supervisord_lite.host import statedir
from supervisord_lite.host.proctable import scan_instances


@dataclass(frozen=True)
class RecordedProcess:
    """One running service as the state file records it.

    Read back from a file, a field that is missing or of the wrong type is None (or
    "" for the instance id): the successor then finds the process by what is left."""

    pid: int | None
    pgid: int | None
    create_time: float | None
    instance_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "pgid": self.pgid, "create_time": self.create_time, "instance_id": self.instance_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordedProcess:
        instance_id = data.get("instance_id", "")
        return cls(
            pid=_whole_number(data.get("pid")),
            pgid=_whole_number(data.get("pgid")),
            create_time=_number(data.get("create_time")),
            instance_id=instance_id if isinstance(instance_id, str) else "",
        )


@dataclass(frozen=True)
class DaemonState:
    """The whole state file: who wrote it, what was wanted, what was running."""

    daemon_pid: int | None = None
    manifest: str = ""
    wanted: tuple[str, ...] = ()
    processes: Mapping[str, RecordedProcess] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "daemon_pid": self.daemon_pid,
            "manifest": self.manifest,
            "wanted": list(self.wanted),
            "processes": {name: record.to_dict() for name, record in self.processes.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DaemonState:
        """Whatever parses of a file a crashed daemon (or a person) left; never raises."""
        wanted = data.get("wanted")
        processes = data.get("processes")
        manifest = data.get("manifest", "")
        return cls(
            daemon_pid=_whole_number(data.get("daemon_pid")),
            manifest=manifest if isinstance(manifest, str) else "",
            wanted=tuple(n for n in wanted if isinstance(n, str)) if isinstance(wanted, list) else (),
            processes={
                name: RecordedProcess.from_dict(info)
                for name, info in (processes.items() if isinstance(processes, dict) else ())
                if isinstance(name, str) and isinstance(info, dict)
            },
        )

    def wanted_services(self, manifest: Manifest) -> list[str]:
        """What was wanted that ``manifest`` still lists as active (the successor starts those)."""
        return [n for n in self.wanted if n in manifest.services and manifest.services[n].is_active]


def read_state(path: Path, on_untrusted: Callable[[str], None] | None = None) -> DaemonState:
    """The state file at ``path``; an empty state when it is missing or unreadable.

    Only a regular file the daemon's uid owns is believed (it names processes to
    kill): anything else is ignored and ``on_untrusted`` is told why."""
    try:
        data = json.loads(statedir.read_trusted(path))
    except statedir.UntrustedFile as exc:
        if on_untrusted is not None:
            on_untrusted(f"{exc}: ignored, nothing in it is stopped or resumed")
        return DaemonState()
    except (OSError, ValueError):
        return DaemonState()
    return DaemonState.from_dict(data) if isinstance(data, dict) else DaemonState()


def write_state(path: Path, state: DaemonState) -> None:
    """Replace the state file atomically (a reader sees the old file or the new one).
    Written 0600 relative to state_dir: a link at either name is replaced, not followed."""
    statedir.write_atomic(path, json.dumps(state.to_dict()).encode(), path.with_suffix(".tmp").name)


def remove_state(path: Path) -> None:
    """After a clean stop nothing is left to recover: no file for a successor to read."""
    try:
        statedir.remove(path)
    except OSError:
        pass


def trusted_uids(*users: str | None) -> frozenset[int]:
    """Whose processes a successor may stop: the daemon's uid and the uids of the
    services' configured ``user``s (a name, or a number when no user has that name)."""
    uids = {os.geteuid()}
    for user in users:
        if not user:
            continue
        try:
            uids.add(pwd.getpwnam(user).pw_uid)
        except KeyError:
            if user.isdigit():
                uids.add(int(user))
    return frozenset(uids)


def survivors(state_dir: Path) -> dict[str, list[psutil.Process]]:
    """instance id -> live processes carrying this state_dir's instance marker."""
    return scan_instances(instance_prefix(state_dir))


def leftover_services(state_dir: Path) -> list[str]:
    """Names of the services whose processes a dead daemon left running."""
    names = set()
    for procs in survivors(state_dir).values():
        for proc in procs:
            try:
                names.add(proc.environ().get("SVC_SERVICE", "?"))
                break
            except psutil.Error:
                continue
    return sorted(names)


def _whole_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
