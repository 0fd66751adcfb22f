"""The state directory belongs to the daemon: private, checked, never followed through a link.

A daemon that runs as root keeps its lock, its state file and every service's log in
``state_dir``. If another local user could write in that folder (they created it
first, or it is group/world-writable), they could plant a symbolic link where
``daemon.lock`` or a log belongs and have root truncate or append to any file, or
forge ``state.json`` to have root kill a process of their choosing. So:

* the folder (and ``logs/``) is created 0700 and refused, with a message saying what
  to do, when it is a symbolic link, is owned by another uid than the daemon's, or is
  writable by group or others (the rule ssh applies to ``~/.ssh``);
* every file in it is opened relative to the folder's descriptor with ``O_NOFOLLOW``
  and created 0600; a symbolic link, a hard link or a file of another owner found
  where one of our files belongs is removed (never opened) and replaced by a fresh
  file, and reported;
* the state file is trusted only when it is a regular file the daemon's uid owns.

The daemon ``claim()``s its state_dir once at start and keeps the folder open: every
later open under it walks from that descriptor, so renaming or swapping the path
afterwards cannot redirect a single write. Paths outside any claim (the CLI, tests)
get the same checks on the folder each call.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
import threading
from collections.abc import Collection, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from supervisord_lite.core.exitcodes import ExitCode

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "UnsafeStateDir",
    "UntrustedFile",
    "claim",
    "ensure_private_dir",
    "open_file",
    "probe_writable",
    "read_trusted",
    "release",
    "remove",
    "report_to",
    "rotate",
    "truncate",
    "write_atomic",
]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_claims: dict[Path, int] = {}  # state_dir (absolute, as configured) -> its open descriptor
_claims_lock = threading.Lock()


def _warn(message: str) -> None:
    import logging  # lazy: `svc up` starts its daemon through this module, before anything is said

    logging.getLogger(__name__).warning(message)


_report: Callable[[str], None] = _warn


class UnsafeStateDir(OSError):
    """A folder someone else could write in, or a link where a folder belongs: refused."""

    code = ExitCode.USAGE

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(errno.EPERM, message, str(path))
        self.message = message

    def __str__(self) -> str:
        return self.message


class UntrustedFile(OSError):
    """A file the daemon did not write (wrong owner, a link, not a regular file): ignored."""

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(errno.EPERM, message, str(path))
        self.message = message

    def __str__(self) -> str:
        return self.message


def report_to(callback: Callable[[str], None]) -> Callable[[str], None]:
    """Where to say that a planted link or foreign file was replaced (the daemon's log);
    returns the previous callback."""
    global _report
    previous, _report = _report, callback
    return previous


# -- who may own what ------------------------------------------------------------


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _owner_text(uid: int) -> str:
    name = user_name(uid)
    return name if name.startswith("uid ") else f"{name} (uid {uid})"


def _check_folder(st: os.stat_result, path: Path, *, owners: frozenset[int]) -> None:
    """Raise UnsafeStateDir unless ``st`` is a folder one of ``owners`` owns and only it may write."""
    me = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    if st.st_uid not in owners and st.st_uid == 0:
        raise UnsafeStateDir(
            path,
            f"refusing {path}: it belongs to root (mode {mode:04o}) and the daemon would run as {_owner_text(me)}. "
            f"Run svc as root for this manifest, or point state_dir at a folder of your own",
        )
    if st.st_uid not in owners:
        raise UnsafeStateDir(
            path,
            f"refusing {path}: it is owned by {_owner_text(st.st_uid)} (mode {mode:04o}) but the daemon runs as "
            f"{_owner_text(me)}, so another user could plant files in it. If you made it yourself, "
            f"`chown -R {user_name(me)} {path}` and `chmod 700 {path}`; otherwise remove it and the daemon creates "
            f"a private one",
        )
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = " and ".join(w for w, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit)
        raise UnsafeStateDir(
            path,
            f"refusing {path}: it is writable by {who} (owner {_owner_text(st.st_uid)}, mode {mode:04o}), so "
            f"another user could plant files in it. Run `chmod 700 {path}` (and check what it holds), or point "
            f"state_dir at a private folder",
        )


def _refuse_link(path: Path) -> UnsafeStateDir:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return UnsafeStateDir(
        path,
        f"refusing {path}: it is a symbolic link{target}; the daemon does not follow links in its state_dir. "
        f"Point state_dir at the real folder, or remove the link and let the daemon create a private folder",
    )


# -- folders ---------------------------------------------------------------------


def _open_child_folder(parent_fd: int, name: str, path: Path, *, create: bool, owners: frozenset[int]) -> int:
    """Open ``name`` in ``parent_fd`` as a checked folder (created 0700 when missing and asked)."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(name, PRIVATE_DIR_MODE, dir_fd=parent_fd)
        except FileExistsError:
            pass  # made by a racing caller: checked below like any other
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(name, parent_fd):
            raise _refuse_link(path) from None
        raise
    try:
        _check_folder(os.fstat(fd), path, owners=owners)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_path_folder(path: Path, *, create: bool, owners: frozenset[int] | None) -> int:
    """Open ``path`` without following a link at its last component; check it when ``owners``."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        if not create:
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path, PRIVATE_DIR_MODE)
        except FileExistsError:
            pass
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise _refuse_link(path) from None
        raise
    if owners is not None:
        try:
            _check_folder(os.fstat(fd), path, owners=owners)
        except BaseException:
            os.close(fd)
            raise
    return fd


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _claimed_root(path: Path) -> tuple[Path, int] | None:
    with _claims_lock:
        for root, fd in _claims.items():
            if path == root or root in path.parents:
                return root, fd
    return None


@contextmanager
def _folder(path: Path, *, create: bool = False, verify: bool = True) -> Iterator[int]:
    """A descriptor on the folder ``path``.

    Under a claimed state_dir: walked from the claim's descriptor, each folder checked
    (ours, private, not a link). Elsewhere: opened without following a link at its last
    component, and when ``verify``, checked to be owned by us (or root) and not
    writable by group or others."""
    path = Path(os.path.abspath(path))
    claimed = _claimed_root(path)
    if claimed is not None:
        root, fd = claimed
        owners = frozenset({os.geteuid()})
        parts = path.relative_to(root).parts
        opened: list[int] = []
        try:
            for depth, part in enumerate(parts, start=1):
                fd = _open_child_folder(fd, part, root.joinpath(*parts[:depth]), create=create, owners=owners)
                opened.append(fd)
            yield fd
        finally:
            for each in opened:
                os.close(each)
        return
    fd = _open_path_folder(path, create=create, owners=frozenset({os.geteuid(), 0}) if verify else None)
    try:
        yield fd
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` 0700 when missing (its parents as usual); raise UnsafeStateDir when
    it is a link, owned by another uid than the daemon's, or writable by group or others."""
    path = Path(os.path.abspath(path))
    if _claimed_root(path) is not None:
        with _folder(path, create=True):
            return
    fd = _open_path_folder(path, create=True, owners=frozenset({os.geteuid()}))
    os.close(fd)


def claim(state_dir: Path) -> None:
    """Check (creating it 0700) and hold ``state_dir`` open for the rest of the process:
    from now on every path under it is reached from this descriptor."""
    path = Path(os.path.abspath(state_dir))
    fd = _open_path_folder(path, create=True, owners=frozenset({os.geteuid()}))
    with _claims_lock:
        old = _claims.pop(path, None)
        _claims[path] = fd
    if old is not None:
        os.close(old)


def release(state_dir: Path) -> None:
    """Let go of a claim (the daemon is stopping)."""
    with _claims_lock:
        fd = _claims.pop(Path(os.path.abspath(state_dir)), None)
    if fd is not None:
        os.close(fd)


def probe_writable(folder: Path) -> None:
    """Prove a file can be created in ``folder`` (raises the OSError that says why not)."""
    name = f".write-test-{os.getpid()}"
    with _folder(folder) as dir_fd:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE, dir_fd=dir_fd)
        os.close(fd)
        os.unlink(name, dir_fd=dir_fd)


# -- files -----------------------------------------------------------------------


def _clear_the_way(name: str, dir_fd: int, path: Path) -> None:
    """Before creating or appending to one of our files: whatever is not a plain file of
    ours at that name is removed (a link, a hard link, another owner's file), never opened."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        why = "a symbolic link"
        try:
            why += f" to {os.readlink(name, dir_fd=dir_fd)}"
        except OSError:
            pass
    elif stat.S_ISREG(st.st_mode) and st.st_uid != os.geteuid():
        why = f"a file owned by {_owner_text(st.st_uid)}"
    elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        why = f"a file with {st.st_nlink} hard links"
    elif stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return  # ours, or a device node (only root makes those: /dev/null, /dev/full)
    else:
        raise UntrustedFile(path, f"{path} is not a regular file; remove it")
    os.unlink(name, dir_fd=dir_fd)
    _report(f"{path} was {why}: removed it (its target untouched) and created a fresh file")


def _open_in(dir_fd: int, name: str, path: Path, flags: int, mode: int) -> int:
    if flags & os.O_CREAT:
        _clear_the_way(name, dir_fd, path)
    else:
        flags |= os.O_NONBLOCK  # a planted FIFO must not hang a reader
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            if flags & os.O_CREAT and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & ~mode:
                os.fchmod(fd, mode)  # a file from before files were private
        elif not stat.S_ISCHR(st.st_mode):
            raise UntrustedFile(path, f"{path} is not a regular file")
        if not flags & os.O_CREAT:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(path: Path, flags: int, mode: int = PRIVATE_FILE_MODE, *, create_folder: bool = False) -> int:
    """``os.open`` for a file in a state folder: relative to the checked folder, never
    through a link, created ``mode`` (0600). With ``O_CREAT`` a link or foreign file in
    the way is replaced; without, it is an error (``ELOOP`` for a link)."""
    path = Path(path)
    writing = bool(flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR))
    with _folder(path.parent, create=create_folder, verify=writing) as dir_fd:
        return _open_in(dir_fd, path.name, path, flags, mode)


def read_trusted(path: Path, limit: int = 16 * 2**20, owners: Collection[int] | None = None) -> bytes:
    """The bytes of a file the daemon wrote: a regular file with one link, owned by the
    daemon's uid (or one of ``owners``). Raises UntrustedFile otherwise,
    FileNotFoundError when missing."""
    trusted = {os.geteuid()} if owners is None else set(owners)
    path = Path(path)
    with _folder(path.parent) as dir_fd:
        try:
            fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UntrustedFile(path, f"{path} is a symbolic link") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UntrustedFile(path, f"{path} is not a regular file")
            if st.st_uid not in trusted:
                raise UntrustedFile(path, f"{path} is owned by {_owner_text(st.st_uid)}, not by the daemon's "
                                          f"{_owner_text(os.geteuid())}")
            if st.st_nlink != 1:
                raise UntrustedFile(path, f"{path} has {st.st_nlink} hard links")
            chunks = []
            size = 0
            while size < limit and (chunk := os.read(fd, min(1 << 16, limit - size))):
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes, tmp_name: str) -> None:
    """Write ``tmp_name`` beside ``path`` and rename it over ``path`` in one step (a reader
    sees the old file or the new one; a link at either name is replaced, not followed)."""
    path = Path(path)
    with _folder(path.parent) as dir_fd:
        fd = _open_in(dir_fd, tmp_name, path.with_name(tmp_name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp_name, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def remove(path: Path) -> None:
    """Remove ``path`` (a link itself, never its target); missing is fine."""
    path = Path(path)
    try:
        with _folder(path.parent) as dir_fd:
            os.unlink(path.name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def truncate(path: Path) -> None:
    """Empty one of our files (a link in the way is replaced, not followed)."""
    os.close(open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))


def rotate(path: Path, backups: int) -> None:
    """NAME.(N-1) -> NAME.N ... NAME -> NAME.1 in ``path``'s folder; the oldest falls off."""
    path = Path(path)
    base = path.name
    with _folder(path.parent) as dir_fd:

        def present(name: str) -> bool:
            try:
                os.lstat(name, dir_fd=dir_fd)
                return True
            except FileNotFoundError:
                return False

        if not present(base):
            return
        for i in range(backups - 1, 0, -1):
            if present(f"{base}.{i}"):
                os.replace(f"{base}.{i}", f"{base}.{i + 1}", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.replace(base, f"{base}.1", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
