"""Where a manifest's runtime files live, derived from its ``state_dir``.

The rule is written once here, because the CLI and the daemon must agree on it
without talking: the control socket, the state file, the daemon's log and lock,
and the ``SVC_INSTANCE`` marker every service's processes carry. Only names are
computed here; checking the folders they name is ``host.socketdir``'s job.
"""

from __future__ import annotations

import os
from pathlib import Path

_SUN_PATH_MAX = 104  # the portable limit of sockaddr_un.sun_path (108 on Linux), minus margin
SOCKET_NAME = "svc.sock"
DAEMON_LOG_NAME = "daemon.log"  # in state_dir: the daemon's output, and its log when the CLI started it
LOCAL_SUFFIX = ".local"  # svc.toml -> svc.local.toml
INSTANCE_ENV_VAR = "SVC_INSTANCE_NUMBER"  # which side-by-side instance (``core.instances``) a command means
RUNTIME_SUBDIR = "svc"  # the folder made in $XDG_RUNTIME_DIR


def state_dir_digest(state_dir: Path) -> str:
    """A short stable digest of the resolved state_dir: names things outside it (the
    socket, when state_dir's path is too long for one, and every service's instance
    marker). SHA-1, as every earlier version computed it: a new CLI must still find an
    older daemon's socket, and a new daemon an older one's leftovers."""
    try:  # CPython's own SHA-1: hashlib would load OpenSSL's digests, ~0.7 MB the daemon keeps for this one hash
        from _sha1 import sha1
    except ImportError:  # an interpreter built without it
        from hashlib import sha1

    return sha1(os.fsencode(state_dir.resolve())).hexdigest()


def fits_socket_address(path: Path) -> bool:
    """Is ``path`` short enough to be a Unix socket address?"""
    return len(os.fsencode(path)) < _SUN_PATH_MAX


def private_socket_dirs(uid: int, runtime_dir: str | None, *, lookup: bool = False) -> list[Path]:
    """The per-user folders a socket goes to when state_dir's path is too long, in order:
    ``$XDG_RUNTIME_DIR/svc`` (when set to an absolute path), then ``/tmp/svc-UID``.
    Each must be a 0700 folder of that uid (``host.socketdir`` creates and checks it).

    With ``lookup``, also ``/run/user/UID/svc`` (where a session's $XDG_RUNTIME_DIR
    usually is): a command run without it still finds a daemon started with it."""
    dirs = []
    if runtime_dir and os.path.isabs(runtime_dir):
        dirs.append(Path(runtime_dir) / RUNTIME_SUBDIR)
    session_default = Path(f"/run/user/{uid}") / RUNTIME_SUBDIR
    if lookup and session_default not in dirs:
        dirs.append(session_default)
    dirs.append(Path(f"/tmp/svc-{uid}"))  # not $TMPDIR: the CLI and a daemon under systemd must agree
    return dirs


def socket_candidates(
    state_dir: Path, *, uid: int | None = None, runtime_dir: str | None = None, lookup: bool = False
) -> list[Path]:
    """Where the daemon of this state_dir may listen, best first.

    ``state_dir/svc.sock`` alone when it fits a Unix socket address; otherwise a name
    derived from the state_dir in each of ``private_socket_dirs`` that fits. The daemon
    listens on the first whose base folder exists; the CLI looks in each (``lookup``:
    a daemon under systemd may see no ``$XDG_RUNTIME_DIR`` where the user's shell does,
    and the other way round). ``uid`` and ``runtime_dir`` default to this process's uid
    and ``$XDG_RUNTIME_DIR``."""
    in_state_dir = state_dir.resolve() / SOCKET_NAME
    if fits_socket_address(in_state_dir):
        return [in_state_dir]
    uid = os.getuid() if uid is None else uid
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") if runtime_dir is None else runtime_dir
    name = f"{state_dir_digest(state_dir)[:16]}.sock"
    folders = private_socket_dirs(uid, runtime_dir, lookup=lookup)
    return [folder / name for folder in folders if fits_socket_address(folder / name)]


def socket_path_for(state_dir: Path, *, uid: int | None = None, runtime_dir: str | None = None) -> Path:
    """The preferred place of this state_dir's control socket (see ``socket_candidates``)."""
    return socket_candidates(state_dir, uid=uid, runtime_dir=runtime_dir)[0]


def is_private_socket_dir(folder: Path, *, uid: int | None = None, runtime_dir: str | None = None) -> bool:
    """Is ``folder`` one of this user's private socket folders (not a state_dir)?"""
    uid = os.getuid() if uid is None else uid
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") if runtime_dir is None else runtime_dir
    return folder in private_socket_dirs(uid, runtime_dir, lookup=True)


def local_name(main_name: str) -> str:
    """The override file read beside a main manifest: ``svc.toml`` -> ``svc.local.toml``."""
    stem, dot, ext = main_name.rpartition(".")
    return f"{stem}{LOCAL_SUFFIX}.{ext}" if dot and stem else f"{main_name}{LOCAL_SUFFIX}"


def instance_state_dir(state_dir: Path, instance: int) -> Path:
    """Instance N's state_dir: ``STATE_DIR-N`` beside the manifest's own (0: unchanged)."""
    return state_dir if instance == 0 else state_dir.with_name(f"{state_dir.name}-{instance}")


def instance_prefix(state_dir: Path) -> str:
    """The start of every SVC_INSTANCE marker of this manifest's services."""
    return "svc" + state_dir_digest(state_dir)[:8] + "-"
