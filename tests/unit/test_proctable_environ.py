"""The SVC_INSTANCE marker is found in a process's environment of any size up to the limit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from supervisord_lite.host import proctable


@pytest.mark.parametrize("padding", [0, proctable.ENVIRON_FIRST_READ - 40, proctable.ENVIRON_FIRST_READ * 3])
def test_the_instance_marker_is_found_behind_an_environment_of_any_size(padding: int) -> None:
    chunk = 1 << 15  # one variable may hold at most 128 KiB
    env = {f"PADDING{i}": "x" * min(chunk, padding - i * chunk) for i in range(-(-padding // chunk))}
    env |= {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SVC_INSTANCE": "svc-test-42"}
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, env=env)
    try:
        assert proctable.read_proc_table().instance(child.pid) == "svc-test-42"
    finally:
        child.communicate(timeout=60)


def test_a_process_without_the_marker_has_no_instance() -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PADDING": "y" * proctable.ENVIRON_FIRST_READ}
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, env=env)
    try:
        assert proctable.read_proc_table().instance(child.pid) is None
    finally:
        child.communicate(timeout=60)
