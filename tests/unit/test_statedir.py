"""host.statedir: a claimed folder is reached through its descriptor, links and foreign
files are never opened, and only the daemon's own state file is believed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisord_lite.host import statedir


@pytest.fixture
def reports() -> Iterator[list[str]]:
    said: list[str] = []
    previous = statedir.report_to(said.append)
    yield said
    statedir.report_to(previous)


def test_a_claim_keeps_writing_into_the_real_folder_after_the_path_is_swapped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    statedir.claim(state)
    try:
        statedir.ensure_private_dir(state / "logs")
        moved = tmp_path / "moved"
        state.rename(moved)  # someone renames the folder away and puts a link in its place
        decoy = tmp_path / "decoy"
        (decoy / "logs").mkdir(parents=True, mode=0o700)
        state.symlink_to(decoy)
        fd = statedir.open_file(state / "logs" / "api.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(fd, b"line\n")
        os.close(fd)
        statedir.write_atomic(state / "state.json", b"{}", "state.tmp")
    finally:
        statedir.release(state)
    assert (moved / "logs" / "api.log").read_bytes() == b"line\n"
    assert (moved / "state.json").read_bytes() == b"{}"
    assert list((decoy / "logs").iterdir()) == [] and not (decoy / "state.json").exists()


def test_folders_are_created_private_and_loose_ones_refused(tmp_path: Path) -> None:
    statedir.ensure_private_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b").st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    with pytest.raises(statedir.UnsafeStateDir, match=r"writable by group and others .*mode 0777.*chmod 700"):
        statedir.ensure_private_dir(loose)
    with pytest.raises(statedir.UnsafeStateDir, match="writable by group and others"):
        statedir.open_file(loose / "x.log", os.O_WRONLY | os.O_CREAT)
    assert not (loose / "x.log").exists()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "a")
    with pytest.raises(statedir.UnsafeStateDir, match="symbolic link"):
        statedir.ensure_private_dir(link)


def test_links_and_hard_links_in_the_way_are_replaced_not_followed(tmp_path: Path, reports: list[str]) -> None:
    target = tmp_path / "target"
    target.write_text("keep\n")
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    (folder / "soft.log").symlink_to(target)
    os.link(target, folder / "hard.log")
    for name in ("soft.log", "hard.log"):
        fd = statedir.open_file(folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(fd, b"new\n")
        os.close(fd)
        assert (folder / name).read_text() == "new\n" and not (folder / name).is_symlink()
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600
    assert target.read_text() == "keep\n" and os.stat(target).st_nlink == 1
    assert len(reports) == 2 and "symbolic link" in reports[0] and "hard links" in reports[1]
    # reading never follows a link either
    (folder / "read.log").symlink_to(target)
    with pytest.raises(OSError):
        statedir.open_file(folder / "read.log", os.O_RDONLY)


def test_a_fifo_is_not_a_log(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "api.log")
    with pytest.raises(statedir.UntrustedFile):
        statedir.open_file(tmp_path / "api.log", os.O_RDONLY)  # and it does not hang
    with pytest.raises(statedir.UntrustedFile):
        statedir.open_file(tmp_path / "api.log", os.O_WRONLY | os.O_CREAT)


def test_only_our_own_plain_file_is_trusted(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{}")
    assert statedir.read_trusted(path) == b"{}"
    os.link(path, tmp_path / "other")
    with pytest.raises(statedir.UntrustedFile, match="hard links"):
        statedir.read_trusted(path)
    os.unlink(tmp_path / "other")
    link = tmp_path / "link.json"
    link.symlink_to(path)
    with pytest.raises(statedir.UntrustedFile, match="symbolic link"):
        statedir.read_trusted(link)
    with pytest.raises(FileNotFoundError):
        statedir.read_trusted(tmp_path / "missing.json")
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
        with pytest.raises(statedir.UntrustedFile, match="owned by"):
            statedir.read_trusted(path)


def test_rotation_moves_links_as_links(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep\n")
    folder = tmp_path / "logs"
    folder.mkdir(mode=0o700)
    (folder / "api.log").write_text("current\n")
    (folder / "api.log.1").symlink_to(target)
    statedir.rotate(folder / "api.log", 2)
    assert (folder / "api.log.1").read_text() == "current\n"
    assert (folder / "api.log.2").is_symlink() and target.read_text() == "keep\n"
    statedir.truncate(folder / "api.log.2")  # truncating where a link sits replaces the link
    assert not (folder / "api.log.2").is_symlink() and target.read_text() == "keep\n"
