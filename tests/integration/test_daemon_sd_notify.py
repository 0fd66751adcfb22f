"""The running daemon as systemd sees it: READY, WATCHDOG, STATUS and STOPPING
notifications on NOTIFY_SOCKET, which the services do not inherit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

from tests.integration.harness import SVC, Platform


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, Path]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)  # a hang guard: a loaded 2-core machine has taken over 15 s
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
        assert daemon.wait(timeout=60) == 0
    finally:
        daemon.kill()
        daemon.wait()
        sock.close()
