"""Where the control socket goes, and what is checked there before anyone trusts it."""

from __future__ import annotations

import os
import re
import socket
import stat
from pathlib import Path

import pytest

from supervisord_lite.core import paths
from supervisord_lite.host import socketdir


def test_a_short_state_dir_holds_its_socket(tmp_path: Path) -> None:
    assert paths.socket_candidates(tmp_path / ".svc", uid=1000, runtime_dir="/run/user/1000") == [tmp_path / ".svc" / "svc.sock"]
    assert paths.socket_candidates(tmp_path / ".svc", uid=1000, runtime_dir="/run/user/1000", lookup=True) == [
        tmp_path / ".svc" / "svc.sock"
    ]


def test_the_state_dir_digest_is_sha1_of_its_resolved_path_without_loading_hashlib(tmp_path: Path) -> None:
    """The socket's name and the instance marker of every earlier version came from
    hashlib's SHA-1: a new CLI must find an older daemon, a new daemon an older one's
    leftovers. Computing it must not load hashlib (OpenSSL's digests: memory the daemon
    would keep)."""
    import hashlib
    import subprocess
    import sys

    state_dir = tmp_path / "a" / ".." / ".svc"
    assert paths.state_dir_digest(state_dir) == hashlib.sha1(os.fsencode(state_dir.resolve())).hexdigest()
    probe = (
        "import sys; from pathlib import Path; from supervisord_lite.core import paths; "
        f"print(paths.state_dir_digest(Path({str(state_dir)!r})), 'hashlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert out == [paths.state_dir_digest(state_dir), "False"]


def test_a_long_state_dir_goes_to_the_runtime_dir_then_a_per_uid_folder_in_tmp(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120) / ".svc"
    name = paths.state_dir_digest(deep)[:16] + ".sock"
    assert paths.socket_candidates(deep, uid=1000, runtime_dir="/xdg") == [Path("/xdg/svc") / name, Path("/tmp/svc-1000") / name]
    assert paths.socket_candidates(deep, uid=1000, runtime_dir="") == [Path("/tmp/svc-1000") / name]
    assert paths.socket_candidates(deep, uid=1000, runtime_dir="relative/dir") == [Path("/tmp/svc-1000") / name]
    # the CLI also looks where a session's $XDG_RUNTIME_DIR usually is
    assert paths.socket_candidates(deep, uid=1000, runtime_dir="", lookup=True) == [
        Path("/run/user/1000/svc") / name, Path("/tmp/svc-1000") / name,
    ]
    assert paths.socket_candidates(deep, uid=1000, runtime_dir="/run/user/1000", lookup=True) == [
        Path("/run/user/1000/svc") / name, Path("/tmp/svc-1000") / name,
    ]
    # a runtime dir too long for a socket address is skipped
    assert paths.socket_candidates(deep, uid=7, runtime_dir="/" + "r" * 120) == [Path("/tmp/svc-7") / name]
    for path in paths.socket_candidates(deep, uid=4294967294, runtime_dir="/run/user/4294967294", lookup=True):
        assert paths.fits_socket_address(path)
    assert paths.is_private_socket_dir(Path("/tmp/svc-1000"), uid=1000, runtime_dir="")
    assert not paths.is_private_socket_dir(deep, uid=1000, runtime_dir="")


def test_the_private_folder_is_made_0700_whatever_the_umask(tmp_path: Path) -> None:
    folder = tmp_path / "svc-me"
    old = os.umask(0o277)
    try:
        socketdir.ensure_private_dir(folder)
    finally:
        os.umask(old)
    seen = os.lstat(folder)
    assert stat.S_ISDIR(seen.st_mode) and stat.S_IMODE(seen.st_mode) == 0o700 and seen.st_uid == os.getuid()
    socketdir.ensure_private_dir(folder)  # made already: checked, kept
    assert socketdir.verify_private_dir(folder)
    assert not socketdir.verify_private_dir(tmp_path / "missing")


def test_a_private_folder_that_is_not_ours_or_not_private_is_refused_naming_owner_and_mode(tmp_path: Path) -> None:
    folder = tmp_path / "svc-open"
    folder.mkdir()
    os.chmod(folder, 0o755)
    me = socketdir.describe_uid(os.getuid())
    with pytest.raises(socketdir.SocketPathError, match=re.escape(f"is owned by {me} with mode 0755; it must be owned by {me} with mode 0700")):
        socketdir.ensure_private_dir(folder)
    os.chmod(folder, 0o700)
    stranger = 4242424
    with pytest.raises(socketdir.SocketPathError, match=re.escape(f"is owned by {me} with mode 0700; it must be owned by uid {stranger} with mode 0700")):
        socketdir.verify_private_dir(folder, uid=stranger)
    link = tmp_path / "svc-link"
    link.symlink_to(folder)
    with pytest.raises(socketdir.SocketPathError, match=f"{link} is a symbolic link \\(to {folder}\\)"):
        socketdir.ensure_private_dir(link)
    plain = tmp_path / "svc-file"
    plain.write_text("")
    with pytest.raises(socketdir.SocketPathError, match="is not a folder"):
        socketdir.verify_private_dir(plain)


def test_only_a_socket_or_nothing_may_be_at_the_socket_path(tmp_path: Path) -> None:
    path = tmp_path / "svc.sock"
    assert socketdir.socket_present(path) is False
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(os.fspath(path))
        assert socketdir.socket_present(path) is True
    path.unlink()
    for make, what in ((lambda: path.symlink_to(tmp_path / "nowhere"), "a symbolic link"), (path.mkdir, "a folder"),
                       (lambda: path.write_text(""), "a file")):
        make()
        with pytest.raises(socketdir.SocketPathError, match=f"{path} is {what}.*not a socket: refusing to use it; remove it"):
            socketdir.socket_present(path)
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()


def test_the_cli_finds_the_candidate_a_daemon_listens_on(tmp_path: Path) -> None:
    first, second = tmp_path / "a.sock", tmp_path / "b.sock"
    assert socketdir.locate([first, second], default=second) == second  # nothing there: where one would listen
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(os.fspath(second))
        listening.listen()
        assert socketdir.locate([first, second], default=first) == second
        with socket.socket(socket.AF_UNIX) as stale:  # a socket file nothing listens on
            stale.bind(os.fspath(first))
        assert socketdir.locate([first, second], default=first) == second  # the one that answers
