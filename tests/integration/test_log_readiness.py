"""Readiness on a log line (``ready.log``) with real processes: not ready a line early,
noticed promptly, and combined with the port when both are asked for."""

from __future__ import annotations

import json
import sys

from tests.conftest import FAKES
from tests.integration.harness import Platform


def test_log_ready_service_is_not_ready_one_line_early(platform: Platform) -> None:
    lines = platform.root / "lines.jsonl"
    platform.services["model"] = {
        "tier": "app", "command": [sys.executable, str(FAKES / "slow_log_ready.py"), str(lines)],
        "ready": {"log": "^READY"},
    }
    platform.write()
    assert platform.svc("up").returncode == 0
    status = platform.status()["model"]
    printed = {json.loads(x)["line"]: json.loads(x)["time"] for x in lines.read_text().splitlines()}
    assert status["ready_at"] >= printed["READY to serve"]
    assert status["ready_at"] - printed["READY to serve"] < 0.25  # and noticed promptly


def test_log_ready_combines_with_the_port(platform: Platform) -> None:
    # the port opens first; the service is ready only once the line also appears
    platform.add("api", args="--ready-line 'caches warm' --delay 0.2", ready={"log": "caches warm"})
    platform.write()
    assert platform.svc("up").returncode == 0
    status = platform.status()["api"]
    listening = platform.events("listening", "api")[0]["time"]
    assert status["ready_at"] >= listening and status["port_up"] is True
