"""The metrics, alert rules and dashboard against the real Prometheus tools.

promtool checks a real scrape, the scrape config and the alert rules (with their
unit tests), and every Grafana panel expression as PromQL. A real Prometheus
server then scrapes a MetricsServer fed with hand-made snapshots: port health
goes down and up, restarts rise, and every panel expression returns data.

Without promtool/prometheus these tests skip, except under CI (CI=true), where
they fail: CI installs the Debian package `prometheus`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisord_lite.daemon.httpserver import MetricsServer
from supervisord_lite.daemon.metrics import FAMILIES, PROBE_FAMILY
from supervisord_lite.core.snapshot import ServiceSnapshot, SupervisorSnapshot
from supervisord_lite.core.states import ServiceState
from tests.conftest import ROOT, free_port, wait_until

PROMETHEUS_DIR = ROOT / "config" / "prometheus"
DASHBOARD = ROOT / "config" / "grafana" / "svc-dashboard.json"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; CI must install the Debian package `prometheus`")
        pytest.skip(f"{name} is not installed (Debian package `prometheus`)")
    return path


@pytest.fixture
def promtool() -> str:
    return tool("promtool")


def run(*argv: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, input=stdin, capture_output=True, cwd=cwd, timeout=60, check=False)
    return subprocess.CompletedProcess(argv, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def every_state_snapshot(restarts: int = 0, api_up: bool = True) -> SupervisorSnapshot:
    """One service per state, plus a worker without a port and a foreign process on a port."""
    services = [
        ServiceSnapshot(
            name=f"svc-{state.value}",
            tier="backend",
            port=9100 + i,
            state=state,
            pid=30_000 + i if state in (ServiceState.READY, ServiceState.STARTING, ServiceState.UNHEALTHY) else None,
            started_at=time.time() - 100 if state is not ServiceState.STOPPED else None,
            ready_duration=0.25 if state is ServiceState.READY else None,
            restarts=i,
            restarts_total=i,
            port_up=state is ServiceState.READY,
            conflict_pid=4321 if state is ServiceState.CONFLICT else None,
            conflict_cmdline="python -m http.server" if state is ServiceState.CONFLICT else "",
            rss_bytes=10_000_000 + i if state is ServiceState.READY else None,
            cpu_seconds=1.5 + i if state is ServiceState.READY else None,
        )
        for i, state in enumerate(ServiceState)
    ]
    services.append(
        ServiceSnapshot(
            name="api",
            tier="backend",
            port=8000,
            state=ServiceState.READY if api_up else ServiceState.UNHEALTHY,
            pid=31_000,
            started_at=time.time() - 50,
            ready_duration=0.5,
            restarts=restarts,
            restarts_total=restarts,
            port_up=api_up,
            rss_bytes=50_000_000,
            cpu_seconds=time.process_time(),
            memory_restarts=0,
        )
    )
    services.append(ServiceSnapshot(name="worker", tier="backend", port=None, state=ServiceState.READY, restarts=2, restarts_total=2))
    return SupervisorSnapshot(
        name="demo", manifest="/srv/svc.toml", pid=os.getpid(), started_at=time.time(), services=tuple(services), reloads_ok=1
    )


def scrape(server: MetricsServer) -> bytes:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
        return bytes(resp.read())


# -- promtool -----------------------------------------------------------------


def test_a_real_scrape_passes_promtool_check_metrics(promtool: str) -> None:
    snap = every_state_snapshot(restarts=3)
    with MetricsServer(("127.0.0.1", 0), lambda: snap) as server:
        for service in snap.services:
            if service.port is not None:
                for latency in (0.0003, 0.002, 0.04, 9.0):
                    server.metrics.observe_probe(service.name, service.port, latency)
        body = scrape(server)
    assert b'svc_service_state{service="svc-conflict",tier="backend",state="conflict"} 1' in body
    result = run(promtool, "check", "metrics", stdin=body)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_the_scrape_config_and_its_rules_are_valid(promtool: str) -> None:
    result = run(promtool, "check", "config", "prometheus.yml", cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    result = run(promtool, "test", "rules", "alerts_test.yml", cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", ())  # collapsed rows


def panel_exprs(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard, variables included."""
    found = [(p["title"], t["expr"]) for p in panels(board) for t in p.get("targets", ()) if t.get("expr")]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query, re.DOTALL)  # Grafana's, not PromQL
            found.append((f"variable {var['name']}", inner.group(1) if inner else query))
    return found


def panels_without_data(prom: Prometheus, empty: dict[str, str]) -> dict[str, str]:
    """Fill ``empty`` with the dashboard panels whose query returns nothing (title -> query)."""
    empty.clear()
    for title, expr in panel_exprs(dashboard()):
        query = substitute(expr, rate_interval="10s")
        if not prom.query(query):
            empty[title] = query
    return empty


def substitute(expr: str, rate_interval: str = "1m") -> str:
    """Replace Grafana's variables the way Grafana would ("All" is .*)."""
    values = {
        "__rate_interval": rate_interval,
        "__interval": "15s",
        "__range": "1h",
        "service": ".*",
        "instance": ".*",
        "datasource": "prometheus",
    }

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        assert name in values, f"unknown dashboard variable ${name} in {expr!r}"
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", one, expr)


def test_every_dashboard_expression_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = panel_exprs(dashboard())
    assert len(exprs) >= 15
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(expr)} for i, (_, expr) in enumerate(exprs)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


# -- the contract between metrics, dashboard and alerts ----------------------


def exported_names() -> set[str]:
    names = {name for name, _, _ in FAMILIES}
    base = PROBE_FAMILY[0]
    return names | {f"{base}_bucket", f"{base}_count", f"{base}_sum"}


def test_dashboard_and_alerts_use_only_metrics_that_exist() -> None:
    texts = [expr for _, expr in panel_exprs(dashboard())] + [(PROMETHEUS_DIR / "alerts.yml").read_text()]
    used = {name for text in texts for name in re.findall(r"\bsvc_[a-z_]+\b", text)}
    used -= {"svc_who"}  # the command named in an alert's description
    assert used, "no svc_ metric found"
    assert used <= exported_names(), f"unknown metrics: {sorted(used - exported_names())}"
    # every family the README promises is shown somewhere
    promised = {
        "svc_port_up",
        "svc_port_conflict",
        "svc_service_state",
        "svc_service_restarts_total",
        "svc_service_start_time_seconds",
        "svc_service_ready_duration_seconds",
        "svc_process_resident_memory_bytes",
        "svc_process_cpu_seconds_total",
        "svc_manifest_reloads_total",
        "svc_port_probe_duration_seconds_bucket",
    }
    assert promised <= used, f"not on the dashboard or in alerts: {sorted(promised - used)}"


def test_the_state_timeline_names_every_state() -> None:
    (panel,) = [p for p in panels(dashboard()) if p["title"] == "Service states"]
    expr = panel["targets"][0]["expr"]
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    shown = {int(code): opt["text"] for code, opt in mapping["options"].items()}
    assert sorted(shown.values()) == sorted(s.value for s in ServiceState)
    for code, state in shown.items():
        assert f'state="{state}"}} == 1) * {code}' in expr, state


# -- a live Prometheus --------------------------------------------------------


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            data = json.load(resp)
        assert data["status"] == "success", data
        return list(data["data"]["result"])

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as resp:
            return json.load(resp)


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """Start a real Prometheus scraping a target every second; kill it at the end."""
    binary = tool("prometheus")
    started: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> Prometheus:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
                    "scrape_configs": [{"job_name": "svc", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
                }
            )
        )
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        started.append(proc)
        prom = Prometheus(f"http://127.0.0.1:{port}")

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_until(ready, timeout=30, what="Prometheus ready")
        return prom

    try:
        yield start
    finally:
        for proc in started:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.e2e
def test_live_prometheus_sees_health_change_and_every_panel_has_data(prometheus_for: Any) -> None:
    current = [every_state_snapshot(restarts=0, api_up=True)]
    stop = threading.Event()
    server = MetricsServer(("127.0.0.1", 0), lambda: current[0])
    server.start()

    def probes() -> None:  # the supervisor's probe loop, in miniature
        while not stop.wait(0.05):
            for service in current[0].services:
                if service.port is not None:
                    server.metrics.observe_probe(service.name, service.port, 0.0004 if service.port_up else 0.002)

    feeder = threading.Thread(target=probes, daemon=True)
    feeder.start()
    try:
        prom = prometheus_for(server.port)
        up = 'svc_port_up{service="api"}'
        wait_until(lambda: prom.value(up) == 1, timeout=30, what="api up in Prometheus")
        assert prom.value('up{job="svc"}') == 1

        current[0] = every_state_snapshot(restarts=0, api_up=False)  # the service dies...
        wait_until(lambda: prom.value(up) == 0, timeout=15, what="api down in Prometheus")
        current[0] = every_state_snapshot(restarts=1, api_up=True)  # ...and is restarted
        wait_until(lambda: prom.value(up) == 1, timeout=15, what="api up again")
        wait_until(
            lambda: (prom.value('increase(svc_service_restarts_total{service="api"}[1m])') or 0) > 0,
            timeout=15,
            what="restarts of api rising",
        )

        empty: dict[str, str] = {}
        wait_until(lambda: not panels_without_data(prom, empty), timeout=20, interval=0.5,
                   what=f"data for every panel (empty: {empty})")

        groups = prom.get("/api/v1/rules")["data"]["groups"]
        alerts = {rule["name"] for group in groups for rule in group["rules"]}
        assert alerts == {"SvcServiceDown", "SvcPortConflict", "SvcCrashLoop", "SvcServiceFailed", "SvcDaemonDown"}
    finally:
        stop.set()
        feeder.join()
        server.stop()
