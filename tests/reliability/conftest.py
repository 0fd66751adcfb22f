"""Fixtures for the fault and load tests: a Platform that always cleans up, and daemon
measurements (open descriptors, resident memory) read with psutil."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.integration.harness import Platform


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


@dataclass(frozen=True)
class Usage:
    fds: int
    rss: int  # bytes

    def __str__(self) -> str:
        return f"{self.fds} fds, {self.rss / 2**20:.1f} MiB RSS"


def daemon_usage(platform: Platform) -> Usage:
    pid = platform.daemon_pid()
    assert pid, "no daemon runs"
    proc = psutil.Process(pid)
    return Usage(fds=proc.num_fds(), rss=proc.memory_info().rss)
