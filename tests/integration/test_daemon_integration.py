"""The daemon as systemd and Prometheus see it: sd_notify messages, a taken metrics
address, and scrapes that stay whole while services start, stop and reload."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess

import threading
import urllib.request
from pathlib import Path

from tests.conftest import free_ports, wait_until
from tests.integration.harness import SVC, Platform


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, Path]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(15)
    return sock, path


def test_daemon_speaks_sd_notify(platform: Platform, tmp_path: Path) -> None:
    platform.add("api")
    platform.write()
    sock, path = _notify_socket(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}
    daemon = subprocess.Popen([*SVC, "daemon", "--manifest", str(platform.manifest)], env=env, cwd=platform.root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        received: list[str] = []

        def until(word: str) -> None:
            while not any(line.startswith(word) for line in received):
                received.extend(sock.recv(4096).decode().splitlines())

        until("READY=1")  # sent once the control socket serves
        assert platform.svc("status").returncode == 0
        until("WATCHDOG=1")  # WATCHDOG_USEC set: pings at half the interval
        platform.svc("up", check=True)
        until("STATUS=")
        # the service must not inherit the daemon's notify socket
        env_of_service = Path(f"/proc/{platform.status()['api']['pid']}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith(b"NOTIFY_SOCKET=") for v in env_of_service)
        daemon.send_signal(signal.SIGTERM)
        until("STOPPING=1")
        assert daemon.wait(timeout=15) == 0
    finally:
        daemon.kill()
        daemon.wait()
        sock.close()


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
    metrics_port = free_ports(1)[0]
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



