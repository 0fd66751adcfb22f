"""Liveness by the port sweep with a real daemon and real processes: a service whose
process lives on but whose port closes is restarted after unhealthy_threshold sweeps,
also once the sweep has stopped telling it each unchanged result."""

from __future__ import annotations

import os
import re
import signal
import urllib.request

from tests.conftest import FAKES, PYTHON, free_ports, wait_until
from tests.integration.harness import Platform, port_accepts


def probe_count(metrics_port: int, service: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf'^svc_port_probe_duration_seconds_count{{service="{service}",port="\d+"}} (\d+)$', text, re.M)
    return int(found.group(1)) if found else 0


def test_a_port_closed_under_a_live_process_is_found_and_the_service_restarted(platform: Platform) -> None:
    port, steady_port, metrics_port = free_ports(3)  # distinct: chosen together
    platform.supervisor["metrics"] = f"127.0.0.1:{metrics_port}"
    platform.add("wedged", port=port, command=f"{PYTHON} {FAKES / 'drop_listener.py'} {port}", unhealthy_threshold=2)
    platform.add("steady", port=steady_port, command=f"{PYTHON} {FAKES / 'drop_listener.py'} {steady_port}")
    platform.write()
    platform.svc("up", check=True)
    first = platform.status()["wedged"]
    steady_pid = platform.status()["steady"]["pid"]

    # several sweeps (200 ms apart) found it listening: it is one of the quiet ones now,
    # and the probe histogram still counts each sweep
    wait_until(lambda: probe_count(metrics_port, "wedged") >= 5, timeout=30, what="five probes of wedged")
    counted = probe_count(metrics_port, "wedged")
    wait_until(lambda: probe_count(metrics_port, "wedged") >= counted + 3, timeout=30, what="more probes of wedged")

    os.kill(first["pid"], signal.SIGUSR1)  # the process stays; its port closes
    wait_until(lambda: not port_accepts(port), timeout=10, what="wedged's port to close")

    def restarted() -> dict | None:
        s = platform.status()["wedged"]
        return s if s["state"] == "ready" and s["pid"] != first["pid"] else None

    after = wait_until(restarted, timeout=30, what="wedged to be restarted")
    assert after["restarts"] == 1  # type: ignore[index]
    assert port_accepts(port)
    log = (platform.state_dir / "logs" / "wedged.log").read_text()
    assert "port" in log and "is not listening" in log, log[-2000:]
    steady = platform.status()["steady"]
    assert steady["pid"] == steady_pid and steady["restarts"] == 0 and steady["state"] == "ready"
