"""The status page and its JSON API, and that `svc status`, `svc ports` and
/metrics tell the same live health.

The first tests serve the page's routes from a real MetricsServer over hand-made
snapshots; the last ones run a real daemon (the Platform harness) with the
endpoint on a free loopback port and compare what each interface says.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from supervisord_lite.daemon.httpserver import MetricsServer
from supervisord_lite.core.manifest import load_manifest
from supervisord_lite.core.model import Manifest
from supervisord_lite.core.snapshot import ServiceSnapshot, SupervisorSnapshot
from supervisord_lite.core.states import ServiceState
from supervisord_lite.daemon.statuspage import build_view, routes
from tests.conftest import free_ports, wait_until
from tests.integration.harness import Platform

S = ServiceState


def write_manifest(tmp_path: Path, **supervisor: Any) -> Manifest:
    doc = {
        "supervisor": {"name": "shop", "state_dir": ".svc", "metrics": "", **supervisor},
        "tiers": {
            "frontend": {"order": 2, "ports": ["3000-3099"], "description": "Frontend applications"},
            "infrastructure": {"order": 0, "ports": ["5000-5999"]},
            "backend": {"order": 1, "ports": ["8000-8099"]},
        },
        "services": {
            "admin": {"tier": "frontend", "port": 3009, "command": "x", "url": "http://localhost:{port}/admin", "title": "Admin"},
            "super-admin": {"tier": "frontend", "port": 3011, "command": "x", "status": "deprecated", "replaced_by": "admin"},
            "portal": {"tier": "frontend", "port": 3006, "command": "x"},
            "db": {"tier": "infrastructure", "port": 5433, "command": "x", "description": "Main <b>database</b>"},
            "api": {"tier": "backend", "port": 8001, "command": "x", "depends_on": ["db"]},
            "worker": {"tier": "backend", "command": "x", "depends_on": ["db"]},
        },
    }
    path = tmp_path / "svc.toml"
    path.write_text(tomli_w.dumps(doc))
    return load_manifest(path)


def snapshot(manifest: Manifest, **overrides: ServiceSnapshot) -> SupervisorSnapshot:
    services = []
    for spec in manifest.services.values():
        state = S.DEPRECATED if not spec.is_active else S.READY
        services.append(
            overrides.get(spec.name.replace("-", "_"))
            or ServiceSnapshot(name=spec.name, tier=spec.tier, port=spec.port, state=state, url=spec.url,
                               description=spec.description, replaced_by=spec.replaced_by,
                               pid=4000 if state is S.READY else None, port_up=True if spec.port and state is S.READY else None)
        )
    return SupervisorSnapshot(name="shop", manifest=str(manifest.path), pid=os.getpid(), started_at=1_700_000_000.0,
                              services=tuple(services))


# -- the view -------------------------------------------------------------------


def test_view_groups_services_by_tier_in_start_order_sorted_by_port(tmp_path: Path) -> None:
    m = write_manifest(tmp_path)
    view = build_view(snapshot(m), m, now=1_700_000_100.0)
    assert [t["name"] for t in view["tiers"]] == ["infrastructure", "backend", "frontend"]
    assert [t["title"] for t in view["tiers"]] == ["Infrastructure", "Backend", "Frontend applications"]
    by_name = {t["name"]: t for t in view["tiers"]}
    assert by_name["frontend"]["services"] == ["portal", "admin", "super-admin"]  # by port, like the guide
    assert by_name["backend"]["services"] == ["api", "worker"]  # no port: last
    assert by_name["frontend"]["ranges"] == ["3000-3099"]
    assert view["services"]["super-admin"]["status"] == "deprecated"
    assert view["services"]["super-admin"]["replaced_by"] == "admin"
    assert view["services"]["super-admin"]["replaced_by_port"] == 3009
    assert view["services"]["admin"]["title"] == "Admin"
    assert view["status"] == snapshot(m).to_dict()  # the same data as `svc status --json`


def test_a_service_the_manifest_no_longer_has_is_still_shown(tmp_path: Path) -> None:
    m = write_manifest(tmp_path)
    snap = snapshot(m)
    extra = ServiceSnapshot(name="gone", tier="backend", port=8050, state=S.STOPPING)
    snap = SupervisorSnapshot(name=snap.name, manifest=snap.manifest, pid=snap.pid, started_at=snap.started_at,
                              services=(*snap.services, extra))
    view = build_view(snap, m, now=0.0)
    assert view["tiers"][-1]["services"] == ["gone"]


# -- the routes, over a real HTTP server ---------------------------------------------


class Site:
    """A MetricsServer with the status page routes over a snapshot the test sets."""

    def __init__(self, manifest: Manifest, snap: SupervisorSnapshot, logs: dict[str, list[str]]) -> None:
        self.manifest = manifest
        self.snap = snap
        self.tail_calls: list[tuple[str, int]] = []

        def tail(name: str, n: int) -> list[str]:
            self.tail_calls.append((name, n))
            return logs.get(name, [])[-n:]

        self.server = MetricsServer(
            ("127.0.0.1", 0),
            lambda: self.snap,
            extra_routes=routes(get_snapshot=lambda: self.snap, get_manifest=lambda: self.manifest, tail=tail),
        )

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(f"{self.server.url}{path}", timeout=10) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers.items()), exc.read()


LOGS = {"api": [f"line {i}" for i in range(300)], "db": ["<script>alert(1)</script>"]}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """The routes over a manifest that serves service output (http_logs = true)."""
    m = write_manifest(tmp_path, http_logs=True)
    s = Site(m, snapshot(m), LOGS)
    s.server.start()
    try:
        yield s
    finally:
        s.server.stop()


@pytest.fixture
def site_without_logs(tmp_path: Path) -> Iterator[Site]:
    """The routes over a manifest that leaves http_logs at its default."""
    m = write_manifest(tmp_path)
    s = Site(m, snapshot(m), LOGS)
    s.server.start()
    try:
        yield s
    finally:
        s.server.stop()


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_page_is_self_contained_and_pins_its_own_script_and_style(site: Site) -> None:
    for path in ("/", "/status"):
        status, headers, body = site.get(path)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        page = body.decode()
        # nothing loaded from elsewhere: no src/href to another origin, no stylesheet links
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "an external asset"
        assert "<link rel=\"stylesheet\"" not in page and "@import" not in page
        assert 'name="viewport"' in page  # phone-sized windows
        # the CSP allows exactly the inline script and style that are on the page
        csp = headers["Content-Security-Policy"]
        (style,) = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
        scripts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
        assert len(scripts) == 1
        assert csp_hash(style) in csp and csp_hash(scripts[0]) in csp
        assert "default-src 'none'" in csp and "unsafe-inline" not in csp
        # the initial data is embedded, inert, and cannot close its script block
        (data,) = re.findall(r'<script type="application/json" id="initial-view">(.*?)</script>', page, re.DOTALL)
        assert "<" not in data
        assert json.loads(data)["status"]["services"][3]["description"] == "Main <b>database</b>"


def test_api_status_is_the_snapshot_and_api_view_adds_the_layout(site: Site) -> None:
    status, headers, body = site.get("/api/status")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == site.snap.to_dict()
    view = json.loads(site.get("/api/view")[2])
    assert view["status"] == site.snap.to_dict()
    assert [t["name"] for t in view["tiers"]] == ["infrastructure", "backend", "frontend"]


def test_api_logs_gives_the_last_lines_of_known_services_only(site: Site) -> None:
    status, _, body = site.get("/api/logs/api?n=5")
    assert status == 200
    assert json.loads(body) == {"service": "api", "lines": [f"line {i}" for i in range(295, 300)]}
    assert json.loads(site.get("/api/logs/api")[2])["lines"][0] == "line 250"  # 50 by default
    site.get("/api/logs/api?n=100000")
    site.get("/api/logs/api?n=-3")
    site.get("/api/logs/api?n=lots")
    assert [n for _, n in site.tail_calls[-3:]] == [1000, 1, 50]  # clamped, defaulted
    assert json.loads(site.get("/api/logs/db")[2])["lines"] == ["<script>alert(1)</script>"]  # JSON, shown as text
    calls = len(site.tail_calls)
    for bad in ("/api/logs/nope", "/api/logs/..%2F..%2Fetc%2Fpasswd", "/api/logs/api%2F..%2Fdb"):
        status, _, body = site.get(bad)
        assert status == 404, bad
        assert "no service named" in json.loads(body)["error"]
    assert len(site.tail_calls) == calls  # never asked for a name the manifest does not have


def test_service_output_is_off_unless_the_manifest_turns_it_on(site_without_logs: Site) -> None:
    site = site_without_logs
    assert site.manifest.supervisor.http_logs is False  # the default
    for path in ("/api/logs/api", "/api/logs/api?n=5", "/api/logs/db", "/api/logs/nope"):
        status, headers, body = site.get(path)
        assert status == 403, path
        assert headers["Content-Type"] == "application/json"  # the page shows its "error" in the log view
        error = json.loads(body)["error"]
        assert "http_logs = true" in error and "[supervisor]" in error and str(site.manifest.path) in error
        assert "line " not in body.decode()
    assert site.tail_calls == []  # no log file was even read
    # everything else stays
    for path in ("/", "/status", "/api/status", "/api/view", "/metrics", "/healthz"):
        assert site.get(path)[0] == 200, path


def read_event(stream: Any) -> dict[str, Any]:
    """The next `data:` event of a server-sent event stream."""
    data = []
    while True:
        line = stream.readline()
        assert line, "the stream ended"
        line = line.decode().rstrip("\n")
        if line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            return dict(json.loads("\n".join(data)))


def test_events_stream_a_state_change_at_once_and_end_when_the_server_stops(site: Site) -> None:
    with urllib.request.urlopen(f"{site.server.url}/api/events", timeout=10) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        first = read_event(stream)
        assert first["status"]["services"][0]["state"] == "ready"
        services = list(site.snap.services)
        services[0] = ServiceSnapshot(name="admin", tier="frontend", port=3009, state=S.BACKOFF, restarts=1, port_up=False)
        site.snap = SupervisorSnapshot(name="shop", manifest=site.snap.manifest, pid=1, started_at=0.0, services=tuple(services))

        def changed() -> dict[str, Any] | None:
            event = read_event(stream)
            return event if event["status"]["services"][0]["state"] == "backoff" else None

        event = wait_until(changed, timeout=5, what="the backoff event")
        assert event["status"]["services"][0]["restarts"] == 1  # type: ignore[index]
        stopper = threading.Thread(target=site.server.stop)
        stopper.start()
        stopper.join(timeout=10)
        assert not stopper.is_alive(), "stopping the server hung on an open event stream"
        rest = stream.read()  # ends: the server closed it
        assert isinstance(rest, bytes)


def test_the_page_refuses_other_host_names_when_bound_to_loopback(site: Site) -> None:
    with socket.create_connection(("127.0.0.1", site.server.port), timeout=5) as conn:
        conn.sendall(b"GET /api/status HTTP/1.0\r\nHost: evil.example:80\r\n\r\n")
        answer = conn.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 403")


def test_the_page_is_read_only(site: Site) -> None:
    request = urllib.request.Request(f"{site.server.url}/api/status", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    with info.value:
        assert info.value.code == 405


# -- a real daemon: the page, svc status, svc ports and /metrics agree --------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.load(resp)


#: Per-sample values that differ between two reads a few milliseconds apart.
VOLATILE = {"probe_latency", "rss_bytes", "cpu_seconds"}


def stable(status: dict[str, Any]) -> dict[str, Any]:
    return {**status, "services": [{k: v for k, v in s.items() if k not in VOLATILE} for s in status["services"]]}


def test_svc_status_svc_ports_the_page_and_metrics_tell_the_same_health(platform: Platform) -> None:
    (metrics_port,) = free_ports(1)
    platform.supervisor["metrics"] = f"127.0.0.1:{metrics_port}"
    platform.supervisor["http_logs"] = True
    platform.add("db", tier="infra")
    platform.add("api", depends_on=["db"], backoff={"first": "100ms", "max": "100ms"})
    platform.add("worker", port=None, depends_on=["db"])
    platform.add("old", tier="web", status="deprecated", replaced_by="api")
    platform.write()
    platform.svc("up", check=True)
    api_pid = platform.status()["api"]["pid"]
    os.kill(api_pid, signal.SIGKILL)  # one restart, so the numbers are not all zero

    def back() -> bool:
        s = platform.status()["api"]
        return s["state"] == "ready" and s["pid"] != api_pid and s["port_up"] is True

    wait_until(back, timeout=15, what="api restarted and probed up")

    status_json = json.loads(platform.svc("status", "--json", check=True).stdout)
    api_status = get_json(metrics_port, "/api/status")
    metrics = scrape(metrics_port)
    ports = json.loads(platform.svc("ports", "--format", "json", check=True).stdout)

    # /api/status is `svc status --json`
    assert stable(api_status) == stable(status_json)
    # and /metrics says the same per service
    for s in status_json["services"]:
        name = s["name"]
        assert metrics[("svc_service_restarts_total", (("service", name),))] == s["restarts"], name
        current = {dict(labels)["state"] for (metric, labels), v in metrics.items()
                   if metric == "svc_service_state" and dict(labels)["service"] == name and v == 1}
        assert current == {s["state"]}, name
        up = [v for (metric, labels), v in metrics.items() if metric == "svc_port_up" and dict(labels)["service"] == name]
        if s["port"] is None or s["state"] == "deprecated":
            assert up == [], name
        else:
            assert up == [1.0 if s["port_up"] else 0.0], name
    assert status_json["services"][[x["name"] for x in status_json["services"]].index("api")]["restarts"] == 1
    # svc ports shows the same live state per port
    rows = {row["service"]: row for tier in ports["tiers"] for row in tier["services"]}
    assert ports["live"] is True
    for s in status_json["services"]:
        if s["port"] is not None:
            assert rows[s["name"]]["state"] == s["state"], s["name"]
            assert rows[s["name"]]["pid"] == s["pid"], s["name"]

    # the page itself lists every service, and the logs of one
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/", timeout=10) as resp:
        page = resp.read().decode()
    (data,) = re.findall(r'id="initial-view">(.*?)</script>', page, re.DOTALL)
    listed = {name for tier in json.loads(data)["tiers"] for name in tier["services"]}
    assert listed == {"db", "api", "worker", "old"}
    lines = get_json(metrics_port, "/api/logs/api?n=200")["lines"]
    assert any("listening" in line for line in lines)


def test_a_real_daemon_serves_no_service_output_over_http_by_default(platform: Platform) -> None:
    (metrics_port,) = free_ports(1)
    platform.supervisor["metrics"] = f"127.0.0.1:{metrics_port}"
    platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    wait_until(lambda: "listening" in platform.svc("logs", "api").stdout, timeout=10, what="api's output in `svc logs`")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/api/logs/api", timeout=10)
    with refused.value:
        assert refused.value.code == 403
        error = json.load(refused.value)["error"]
    assert "http_logs = true" in error and str(platform.manifest) in error and "`svc logs NAME`" in error
    assert get_json(metrics_port, "/api/status")["services"][0]["name"] == "api"


def test_the_first_response_of_a_real_daemon_already_has_cpu_figures(platform: Platform) -> None:
    (metrics_port,) = free_ports(1)
    platform.supervisor["metrics"] = f"127.0.0.1:{metrics_port}"
    python = sys.executable
    platform.add("busy", port=None, command=f"{python} -c 'while True: pass'")
    platform.add("idle", port=None, command=f"{python} -c 'import time; time.sleep(600)'")
    platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    busy = psutil.Process(platform.status()["busy"]["pid"])
    wait_until(lambda: sum(busy.cpu_times()[:2]) >= 0.3, timeout=30, what="the busy service to burn some CPU")

    # the daemon's first page: no earlier request, so no earlier sample
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/", timeout=10) as resp:
        page = resp.read().decode()
    (data,) = re.findall(r'id="initial-view">(.*?)</script>', page, re.DOTALL)
    cpu = json.loads(data)["cpu"]
    assert set(cpu) == {"busy", "idle", "api"}, cpu  # every running service has a figure on the first paint
    assert cpu["busy"] > cpu["idle"] and cpu["busy"] >= 1.0, cpu
    assert all(0.0 <= v for v in cpu.values())
    # /api/view (what the event stream sends) has them too
    later = get_json(metrics_port, "/api/view")["cpu"]
    assert set(later) == {"busy", "idle", "api"} and later["busy"] > later["idle"], later

