"""The running daemon's metrics endpoint as Prometheus sees it: a taken metrics address
stops the start with a clear error, and scrapes stay whole while services start, stop
and reload."""

from __future__ import annotations

import os
import re
import socket
import threading
import urllib.request

from tests.conftest import wait_until
from tests.integration.harness import Platform


def test_a_taken_metrics_address_stops_the_start_with_a_clear_error(platform: Platform) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        platform.supervisor["metrics"] = f"127.0.0.1:{port}"
        platform.add("api")
        platform.write()
        result = platform.svc("up")
        assert result.returncode == 2
        assert "supervisor.metrics" in result.stderr and f"127.0.0.1:{port}" in result.stderr
        assert str(os.getpid()) in result.stderr  # names who holds it
        assert platform.events("spawned") == []  # no half-started daemon
        assert platform.svc("status").returncode == 3
    finally:
        holder.close()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def test_scrapes_stay_whole_while_services_start_stop_and_reload(platform: Platform) -> None:
    metrics_port = platform.free_port()
    platform.supervisor["metrics"] = f"127.0.0.1:{metrics_port}"
    for i in range(6):
        platform.add(f"s{i}", args="--delay 0.1")
    platform.write()
    platform.svc("up", check=True)
    problems: list[str] = []
    scrapes = 0
    stop = threading.Event()
    state_line = re.compile(r'^svc_service_state\{service="([^"]+)",state="([^"]+)",tier="[^"]+"\} (\S+)$')

    def scrape_forever() -> None:
        nonlocal scrapes
        while not stop.is_set():
            try:
                text = _scrape(metrics_port)
            except OSError as exc:
                problems.append(f"scrape failed: {exc}")
                continue
            scrapes += 1
            current: dict[str, int] = {}
            for line in text.splitlines():
                m = state_line.match(line)
                if m and float(m.group(3)) == 1.0:
                    current[m.group(1)] = current.get(m.group(1), 0) + 1
            if any(n != 1 for n in current.values()):
                problems.append(f"a service in more than one state at once: {current}")

    thread = threading.Thread(target=scrape_forever)
    thread.start()
    try:
        platform.svc("down", "s0", "s1", check=True)
        platform.svc("up", check=True)
        platform.services["s2"]["env"] = {"CHANGED": "1"}
        del platform.services["s5"]
        platform.write()
        platform.svc("reload", check=True)
        platform.svc("restart", "s3", check=True)
        wait_until(lambda: scrapes >= 20, timeout=20, what="20 scrapes")
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert 's5"' not in _scrape(metrics_port)  # a removed service leaves no series behind
