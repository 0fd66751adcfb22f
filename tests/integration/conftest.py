"""Fixtures of the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psutil
import pytest

from supervisord_lite.host.proctable import find_instance_processes


@pytest.fixture
def instance() -> Iterator[str]:
    """A unique SVC_INSTANCE; whatever still carries it at the end gets SIGKILL, and fails the test."""
    instance_id = f"test-{uuid.uuid4().hex[:12]}"
    yield instance_id
    leftovers = find_instance_processes(instance_id)
    for proc in leftovers:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(leftovers, timeout=5)
    assert not leftovers, f"test left processes behind: {[p.pid for p in leftovers]}"
