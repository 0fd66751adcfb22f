"""Filesystem faults: an unwritable state_dir or log folder at start, a full disk for logs.

Tests run as root, and chmod does not stop root, so "unwritable" is made real: a path
under a regular file, or a read-only tmpfs mounted over the folder. A full disk is a
1 MiB tmpfs mounted over state_dir/logs. Mounting needs CAP_SYS_ADMIN: without it those
tests are skipped, except under CI (CI=true), where a skip would hide a lost check. The
mounts are 0700: a tmpfs is 1777 by default, and the daemon refuses a state folder others
may write in.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.integration.harness import SVC, Platform


def mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs under CI: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], None]]:
    """mount(folder, options); every mount is lazily unmounted at the end (the daemon
    may still hold a log open while the platform is being cleaned up)."""
    mounted: list[Path] = []

    def mount(folder: Path, options: str) -> None:
        mount_tmpfs(folder, options)
        mounted.append(folder)

    try:
        yield mount
    finally:
        for folder in reversed(mounted):
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def run_daemon_foreground(platform: Platform) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SVC, "daemon", "--manifest", str(platform.manifest)], capture_output=True, text=True, timeout=30,
        cwd=platform.root, stdin=subprocess.DEVNULL,
    )


def test_state_dir_under_a_file_is_a_clear_error_with_exit_2(platform: Platform) -> None:
    (platform.root / "not-a-folder").write_text("a file where a folder should be\n")
    platform.supervisor["state_dir"] = "not-a-folder/state"
    platform.add("api")
    platform.write()

    up = platform.svc("up")
    assert up.returncode == 2, up.stderr
    assert "supervisor.state_dir" in up.stderr and "not-a-folder/state" in up.stderr and "Not a directory" in up.stderr
    assert "Traceback" not in up.stderr

    daemon = run_daemon_foreground(platform)
    assert daemon.returncode == 2
    assert "supervisor.state_dir" in daemon.stderr and str(platform.manifest) in daemon.stderr
    assert "Traceback" not in daemon.stderr
    assert platform.our_processes() == []  # nothing was started


def test_log_folder_that_cannot_be_created_is_a_clear_error_with_exit_2(platform: Platform) -> None:
    platform.state_dir.mkdir()
    (platform.state_dir / "logs").write_text("a file where the log folder should be\n")
    platform.add("api")
    platform.write()
    daemon = run_daemon_foreground(platform)
    assert daemon.returncode == 2, daemon.stderr
    assert "supervisor.state_dir (logs)" in daemon.stderr and "logs" in daemon.stderr
    assert "Traceback" not in daemon.stderr
    up = platform.svc("up")
    assert up.returncode == 2 and "could not start" in up.stderr and "logs" in up.stderr, up.stderr
    assert platform.our_processes() == []


def test_read_only_state_dir_is_a_clear_error_with_exit_2(platform: Platform, tmpfs: Callable[[Path, str], None]) -> None:
    tmpfs(platform.state_dir, "ro,size=1M,mode=0700")
    platform.add("api")
    platform.write()
    up = platform.svc("up")
    assert up.returncode == 2, up.stderr
    assert "supervisor.state_dir" in up.stderr and "Read-only file system" in up.stderr
    assert "Traceback" not in up.stderr
    assert platform.our_processes() == []


def test_read_only_log_folder_is_a_clear_error_with_exit_2(platform: Platform, tmpfs: Callable[[Path, str], None]) -> None:
    tmpfs(platform.state_dir / "logs", "ro,size=1M,mode=0700")
    platform.add("api")
    platform.write()
    daemon = run_daemon_foreground(platform)
    assert daemon.returncode == 2, daemon.stderr
    assert "supervisor.state_dir (logs)" in daemon.stderr and "Read-only file system" in daemon.stderr
    assert platform.our_processes() == []


def health(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        return int(response.status)


def test_full_log_disk_keeps_services_running_and_is_reported_once(platform: Platform, tmpfs: Callable[[Path, str], None]) -> None:
    logs = platform.state_dir / "logs"
    tmpfs(logs, "size=1M,mode=0700")
    platform.supervisor["log_max_bytes"] = "64MB"  # no rotation: the disk fills up
    port = platform.add("chatty", args="--flood-bytes 4000000")
    quiet = platform.add("quiet")
    platform.write()
    assert port and quiet
    platform.svc("up", check=True)
    pid = platform.status()["chatty"]["pid"]

    def flood_done() -> bool:
        return any(r.get("event") == "listening" for r in platform.events(name="chatty")) and _log_errors(platform) >= 1

    wait_until(flood_done, timeout=20, what="the log disk to fill up")
    # the service is not blocked on a full pipe: it serves (and logs) request after request
    for _ in range(50):
        assert health(port) == 200
    status = platform.status()
    assert status["chatty"]["state"] == "ready" and status["chatty"]["pid"] == pid
    assert status["quiet"]["state"] == "ready" and health(quiet) == 200
    assert status["chatty"]["restarts"] == 0
    # reported once, not once per dropped line
    assert _log_errors(platform, "chatty") == 1, _log_errors(platform)

    # space comes back: logging resumes and says how much was lost
    log_file = logs / "chatty.log"
    log_file.write_bytes(b"")
    (logs / "quiet.log").write_bytes(b"")
    wait_until(lambda: (health(port), "lines dropped after a write error" in log_file.read_text())[1], timeout=10,
               what="a note about the dropped lines")
    assert "GET /health" in log_file.read_text()


def _log_errors(platform: Platform, service: str | None = None) -> int:
    path = platform.state_dir / "daemon.log"
    count = 0
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "cannot write service log" and (service is None or entry.get("service") == service):
            count += 1
    return count
