"""Live health as Prometheus sees it: a real daemon scraped by a real Prometheus.

The daemon (started by the real `svc up`) serves /metrics on a free loopback port;
Prometheus (Debian package `prometheus`) scrapes it every second. A supervised
service is killed: through Prometheus' HTTP query API, `svc_port_up` for it goes
to 0 and back to 1 and `svc_service_restarts_total` rises; and every expression
of the Grafana dashboard returns data from this live Prometheus.

Skips without Prometheus, except under CI (CI=true), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_ports, wait_until
from tests.integration.harness import Platform, port_accepts
from tests.integration.test_promtool import Prometheus, panels_without_data

pytestmark = pytest.mark.e2e

ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed; CI must install the Debian package `prometheus`")
        pytest.skip("prometheus is not installed (Debian package `prometheus`)")
    return path


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts in their own session; their groups are killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def start_prometheus(binary: str, workdir: Path, target_port: int, processes: list[subprocess.Popen[bytes]]) -> Prometheus:
    port = free_ports(1)[0]
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "svc", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
    }))
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=log, start_new_session=True,
        )
    processes.append(proc)
    prom = Prometheus(f"http://127.0.0.1:{port}")

    def ready() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    wait_until(ready, timeout=30, what="Prometheus ready")
    return prom


def test_prometheus_sees_a_killed_service_go_down_and_come_back(
    platform: Platform, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    binary = prometheus_binary()
    metrics_port, foreign_port = free_ports(2)
    platform.supervisor["metrics"] = f"127.0.0.1:{metrics_port}"
    platform.add("db", tier="infra")
    # a slow start keeps its port down for 3 s after the kill: several scrapes see it
    platform.add("api", depends_on=["db"], args="--delay 3", ready={"http": "/health"})
    platform.add("worker", port=None, depends_on=["db"])
    platform.add("web", tier="web", port=foreign_port, depends_on=["api"])  # its port is held by a stranger
    platform.write()
    foreign = subprocess.Popen(
        [sys.executable, "-c", "import socket,time\ns=socket.socket();s.bind(('127.0.0.1',%d));s.listen();time.sleep(600)" % foreign_port],
        start_new_session=True,
    )
    processes.append(foreign)  # type: ignore[arg-type]
    wait_until(lambda: port_accepts(foreign_port), what="the foreign listener")

    result = platform.svc("up")
    assert result.returncode == 1 and f"held by pid {foreign.pid}" in result.stderr, result.stderr  # the conflict
    prom = start_prometheus(binary, tmp_path, metrics_port, processes)

    api_up = 'svc_port_up{service="api"}'
    restarts = 'svc_service_restarts_total{service="api"}'
    wait_until(lambda: prom.value(api_up) == 1, timeout=30, what="api up in Prometheus")
    assert prom.value('up{job="svc"}') == 1
    assert prom.value(restarts) == 0
    assert prom.value('svc_port_conflict{service="web"}') == 1

    os.kill(platform.status()["api"]["pid"], signal.SIGKILL)
    wait_until(lambda: prom.value(api_up) == 0, timeout=20, interval=0.2, what="api down in Prometheus")
    wait_until(lambda: prom.value(api_up) == 1, timeout=30, interval=0.2, what="api up again in Prometheus")
    wait_until(lambda: prom.value(restarts) == 1, timeout=15, interval=0.2, what="api's restart counted in Prometheus")
    assert prom.value(f"min_over_time({api_up}[5m])") == 0  # the dip is in the stored series
    assert (prom.value(f"increase({restarts}[5m])") or 0) > 0
    assert platform.status()["api"]["restarts"] == 1  # and svc status says the same

    empty: dict[str, str] = {}
    wait_until(lambda: not panels_without_data(prom, empty), timeout=30, interval=0.5,
               what=f"data for every dashboard panel (empty: {empty})")
