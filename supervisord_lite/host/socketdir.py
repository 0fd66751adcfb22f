"""The control socket's surroundings, checked before either side trusts them.

``core.paths`` names the places; this module looks at them. The per-user folder a
socket goes to when state_dir's path is too long (``$XDG_RUNTIME_DIR/svc`` or
``/tmp/svc-UID``) sits where another user could have made it first, so it is created
0700 and then proved ours: not a symlink (lstat, then an ``O_NOFOLLOW|O_DIRECTORY``
open and fstat of what was opened), owned by us, writable by no one else. The
socket path itself must be a socket or nothing: a symlink, a folder or a file there
is refused with a message rather than followed, replaced or tripped over.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import struct
from pathlib import Path

from supervisord_lite.core import paths


class SocketAccessDenied(Exception):
    """We may not even look at the socket path: the folder it is in belongs to someone
    else (a daemon of another user, whose state_dir is private)."""


class SocketPathError(Exception):
    """The control socket's folder or path is not safe to use; the message says why."""


def describe_uid(uid: int) -> str:
    """``uid 1001 (mallory)``, or ``uid 1001`` when it has no account."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (for a client,
    the uid that called listen() on the server's socket), from SO_PEERCRED."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


# ----------------------------------------------------------------------------- the private folder


def verify_private_dir(folder: Path, uid: int | None = None) -> bool:
    """False when ``folder`` does not exist; True when it is a folder of ``uid`` that no
    one else may enter; SocketPathError (naming its owner and mode) otherwise."""
    uid = os.getuid() if uid is None else uid
    try:
        seen = os.lstat(folder)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise SocketPathError(f"the control socket folder {folder} cannot be checked: {exc.strerror or exc}") from None
    if stat.S_ISLNK(seen.st_mode):
        raise SocketPathError(
            f"the control socket folder {folder} is a symbolic link (to {_link_target(folder)}), "
            f"owned by {describe_uid(seen.st_uid)}: refusing to follow it; remove it"
        )
    if not stat.S_ISDIR(seen.st_mode):
        raise SocketPathError(f"the control socket folder {folder} is not a folder: refusing to use it; remove it")
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:  # swapped for a symlink since the lstat (ELOOP), or not ours to open
        raise SocketPathError(f"the control socket folder {folder} cannot be opened: {exc.strerror or exc}") from None
    try:
        opened = os.fstat(fd)
    finally:
        os.close(fd)
    _require_private(folder, opened, uid)
    return True


def ensure_private_dir(folder: Path, uid: int | None = None) -> None:
    """Create ``folder`` mode 0700 unless it exists, then prove it ours (``verify_private_dir``)."""
    uid = os.getuid() if uid is None else uid
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass  # made by an earlier daemon, or by someone else first: the check below tells
    except OSError as exc:
        raise SocketPathError(f"cannot create the control socket folder {folder}: {exc.strerror or exc}") from None
    else:
        _undo_umask(folder)
    if not verify_private_dir(folder, uid):
        raise SocketPathError(f"the control socket folder {folder} vanished while it was being made")


def _undo_umask(folder: Path) -> None:
    """A folder we just made is 0700, whatever the umask took away from that."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _require_private(folder: Path, st: os.stat_result, uid: int) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != uid or mode & 0o077:
        raise SocketPathError(
            f"the control socket folder {folder} is owned by {describe_uid(st.st_uid)} with mode {mode:04o}; "
            f"it must be owned by {describe_uid(uid)} with mode 0700: refusing to use it "
            "(someone else may have made it first; remove it and the daemon makes it again)"
        )


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


# ----------------------------------------------------------------------------- the socket path


def socket_present(path: Path) -> bool:
    """True when a socket file is at ``path``, False when nothing is; SocketPathError
    when something else is (a symlink, dangling or not, a folder, a file)."""
    try:
        seen = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except PermissionError as exc:
        raise SocketAccessDenied(f"cannot reach the daemon at {path}: {exc.strerror or exc}") from None
    except OSError as exc:
        raise SocketPathError(f"the control socket {path} cannot be checked: {exc.strerror or exc}") from None
    if stat.S_ISSOCK(seen.st_mode):
        return True
    if stat.S_ISLNK(seen.st_mode):
        what = f"a symbolic link (to {_link_target(path)})"
    elif stat.S_ISDIR(seen.st_mode):
        what = "a folder"
    else:
        what = "a file"
    raise SocketPathError(
        f"the control socket path {path} is {what}, owned by {describe_uid(seen.st_uid)}, not a socket: "
        "refusing to use it; remove it"
    )


def check_before_connect(path: Path) -> None:
    """What the CLI checks before it connects: the private folder (when the socket is in
    one) is ours, and the path is a socket or nothing. SocketPathError otherwise."""
    if paths.is_private_socket_dir(path.parent):
        verify_private_dir(path.parent)
    socket_present(path)


# ----------------------------------------------------------------------------- choosing among the candidates


def listen_path(candidates: list[Path]) -> Path:
    """Where a daemon started now would listen: the first candidate whose base folder
    exists (an unset or missing ``$XDG_RUNTIME_DIR`` falls through to /tmp)."""
    if len(candidates) > 1:
        for path in candidates:
            if path.parent.parent.is_dir():
                return path
    return candidates[0]


def prepare_listen_path(candidates: list[Path]) -> Path:
    """The daemon's socket path, its private folder created and checked; SocketPathError
    when that folder is not ours."""
    path = listen_path(candidates)
    if paths.is_private_socket_dir(path.parent):
        ensure_private_dir(path.parent)
    return path


def locate(candidates: list[Path], default: Path) -> Path:
    """Where the CLI looks for the daemon: the candidate with a socket file (the first
    that accepts a connection when several have one), else ``default`` (where a daemon
    started now would listen). Nothing is trusted here: the request checks the
    listener's uid before it sends anything."""
    if len(candidates) == 1:
        return candidates[0]
    present = []
    for path in candidates:
        try:
            if socket_present(path):
                present.append(path)
        except SocketPathError:
            present.append(path)  # the request reports it
    if len(present) == 1:
        return present[0]
    for path in present:
        if _accepts(path):
            return path
    return present[0] if present else default


def _accepts(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()
