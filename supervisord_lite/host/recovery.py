"""What a daemon leaves for its successor, and what a successor finds.

The state file (``state_dir/state.json``) records the daemon's pid, what was wanted
and every running service's pid, group, start time and instance marker. It is the
successor's guide, not its only one: every service process carries
``SVC_INSTANCE=<prefix><id>`` (the prefix derived from the state_dir), so a daemon
that died between two writes still leaves nothing a successor cannot find.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psutil

from supervisord_lite.core.paths import instance_prefix
from supervisord_lite.host.proctable import scan_instances


def read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Replace the state file atomically (a reader sees the old file or the new one)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


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
