"""The end-to-end tests' platform lives in a subfolder: the test's own servers
(Prometheus, Chromium) keep their files beside it, out of the platform's cleanup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Platform


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform(tmp_path / "platform")
    p.root.mkdir()
    try:
        yield p
    finally:
        p.cleanup()
