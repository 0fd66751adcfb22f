"""Where a manifest's runtime files live, derived from its ``state_dir``.

The rule is written once here, because the CLI and the daemon must agree on it
without talking: the control socket, the state file, the daemon's log and lock,
and the ``SVC_INSTANCE`` marker every service's processes carry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_SUN_PATH_MAX = 104  # the portable limit of sockaddr_un.sun_path (108 on Linux), minus margin
SOCKET_NAME = "svc.sock"


def state_dir_digest(state_dir: Path) -> str:
    """A short stable digest of the resolved state_dir: names things outside it."""
    return hashlib.sha1(os.fsencode(state_dir.resolve())).hexdigest()


def socket_path_for(state_dir: Path) -> Path:
    """Where the daemon of this state_dir listens.

    Normally ``state_dir/svc.sock``; when that path is too long for a Unix socket
    address, a short path in /tmp derived from the state_dir, so both sides agree.
    """
    path = state_dir.resolve() / SOCKET_NAME
    if len(os.fsencode(path)) < _SUN_PATH_MAX:
        return path
    return Path(f"/tmp/svc-{os.getuid()}-{state_dir_digest(state_dir)[:16]}.sock")


def instance_prefix(state_dir: Path) -> str:
    """The start of every SVC_INSTANCE marker of this manifest's services."""
    return "svc" + state_dir_digest(state_dir)[:8] + "-"
