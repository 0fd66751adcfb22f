"""Two side-by-side instances of one manifest, scraped by one real Prometheus.

Each instance's daemon serves /metrics on its own (shifted) port, so Prometheus' own
``instance`` label (the target's address) tells their series apart; the scrape config
adds ``svc_instance`` for people. Skips without Prometheus, except under CI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisord_lite.core.instances import shift_manifest
from supervisord_lite.core.manifest import load_manifest
from tests.conftest import free_ports, wait_until
from tests.e2e.test_prometheus_scraping import prometheus_binary
from tests.integration.harness import SVC, Platform
from tests.integration.test_promtool import Prometheus

pytestmark = pytest.mark.e2e


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def prometheus_proc() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()
            proc.wait(timeout=10)


def test_one_prometheus_tells_two_instances_apart(
    platform: Platform, prometheus_proc: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    binary = prometheus_binary()
    metrics_port, api_port = free_ports(2)
    platform.supervisor["metrics"] = f"127.0.0.1:{metrics_port}"
    platform.add("api", port=api_port, ready={"http": "/health"})
    platform.write()
    one = shift_manifest(load_manifest(platform.manifest), 1)
    moved = [one.services["api"].port, one.supervisor.metrics_address[1]]  # type: ignore[index]
    if not all(p is not None and p <= 65535 and _free(p) for p in moved):
        pytest.skip(f"instance 1's ports {moved} are not free on this machine")

    env = {**os.environ}
    for n in (0, 1):
        result = subprocess.run([*SVC, "up", "-f", str(platform.manifest), "--instance", str(n)],
                                capture_output=True, text=True, timeout=120, env=env, cwd=platform.root)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
    try:
        port = free_ports(1)[0]
        config = tmp_path / "prometheus.yml"
        targets = [{"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"svc_instance": "0"}},
                   {"targets": [f"127.0.0.1:{moved[1]}"], "labels": {"svc_instance": "1"}}]  # fmt: skip
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "svc", "static_configs": targets}],
        }))  # fmt: skip
        with (tmp_path / "prometheus.log").open("wb") as log:
            prometheus_proc.append(subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], stdout=log, stderr=log,
            ))  # fmt: skip
        prom = Prometheus(f"http://127.0.0.1:{port}")

        def both_up() -> bool:
            try:
                series = prom.query('svc_port_up{service="api"} == 1')
            except OSError:
                return False
            return {s["metric"].get("svc_instance") for s in series} == {"0", "1"}

        wait_until(both_up, timeout=60, interval=0.5, what="api of both instances up in one Prometheus")
        series = prom.query('svc_port_up{service="api"}')
        assert {s["metric"]["instance"] for s in series} == {f"127.0.0.1:{metrics_port}", f"127.0.0.1:{moved[1]}"}
    finally:
        for n in (0, 1):
            subprocess.run([*SVC, "shutdown", "-f", str(platform.manifest)], capture_output=True, text=True,
                           timeout=60, cwd=platform.root, env={**env, "SVC_INSTANCE_NUMBER": str(n)})  # fmt: skip
