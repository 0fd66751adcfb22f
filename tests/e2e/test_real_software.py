"""The BizOSaaS shape with the real programs users run, driven by the real `svc` CLI.

One platform for the module (starting it costs about ten seconds): PostgreSQL (as the
`postgres` user), Redis, a Django project (a `migrate` one-shot against PostgreSQL through
psycopg, then `runserver`), a FastAPI app under uvicorn, a second uvicorn app
(`billing-api`) that the flows break with a typo in its module name, a Node.js HTTP
frontend, and Prometheus scraping the daemon's /metrics. Tiers: infra, backend,
frontend, monitoring; readiness through HTTP wherever the program has a URL.

The tests run in file order and each brings the platform to the state it needs, so a
failed flow does not take the next one down with it. The flows are the ones that hung or
lied before the lifecycle was rebuilt: a crash loop after `svc down; svc up`, unrelated
services waiting on a failed backend, a restart with dependents racing its one-shot, the
daemon killed under the platform, and the platform brought back at boot.

Needs root, PostgreSQL 15, redis-server, node (Debian `nodejs`), prometheus, and the
`test` extra's django, fastapi, uvicorn and psycopg: without them the module is skipped,
except under CI, where a skip would hide a lost check.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import free_ports, wait_until
from tests.e2e.test_real_platform import PG_BIN, initdb
from tests.e2e.test_real_platform import _missing as missing_postgres_or_redis
from tests.integration.harness import (
    SVC,
    Platform,
    platform_other_users_can_enter,
    port_accepts,
    wait_gone,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: billing-api's start limit: 3 restarts within 12 s. Its backoff is the default (0.5 s,
#: doubling), so a module that cannot be imported is `failed` after 0.5 + 1 + 2 s of backoff
#: at most and four uvicorn starts of about 0.4 s: about 5 s (measured 4-5 s). The bound is
#: ten times that. (A backoff that kept its history from an earlier failure would wait at
#: least 2 + 4 + 8 s between the first and fourth exit: never 3 restarts within 12 s.)
CRASH_LOOP_BOUND = 60.0
#: PostgreSQL's restart with its dependents: about 5 s (fast shutdown, start, migrate, runserver).
RESTART_BOUND = 60.0
#: A stop of the whole platform: about 2 s (PostgreSQL's fast shutdown is the slowest).
STOP_BOUND = 30.0
LONG_RUNNING = ("postgres", "redis", "django", "api", "billing-api", "frontend", "prometheus")

DJANGO_MANAGE = """\
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bizsite.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""
DJANGO_SETTINGS = """\
import os

SECRET_KEY = "end-to-end-test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bizsite.urls"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
USE_TZ = True
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": os.environ["PG_PORT"],
        "NAME": "postgres",
        "USER": "postgres",
    }
}
"""
DJANGO_URLS = """\
import os

from django.db import connection
from django.http import JsonResponse
from django.urls import path


def health(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_migrations")
        (applied,) = cursor.fetchone()
    return JsonResponse({"pid": os.getpid(), "migrations": applied})


urlpatterns = [path("health/", health)]
"""
FASTAPI_APP = """\
import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
def health():
    return {"service": os.environ["SVC_SERVICE"], "pid": os.getpid()}
"""
NODE_FRONTEND = """\
const http = require("http");
http.createServer(async (req, res) => {
  if (req.url === "/health") { res.writeHead(200, { "content-type": "text/plain" }); res.end("ok\\n"); return; }
  try {
    const api = await fetch(process.env.API_URL + "/health");
    res.writeHead(api.status, { "content-type": "application/json" }); res.end(await api.text());
  } catch (err) { res.writeHead(502); res.end(String(err)); }
}).listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
"""


def missing() -> str | None:
    why = missing_postgres_or_redis()
    if why:
        return why
    for name in ("node", "prometheus"):
        if shutil.which(name) is None:
            return f"{name} is not installed (apt-get install nodejs prometheus)"
    for module in ("django", "fastapi", "uvicorn", "psycopg"):
        try:
            __import__(module)
        except ImportError:
            return f"the Python package {module} is not installed (pip install -e '.[test]')"
    return None


@dataclass
class BizOSaaS:
    """The platform under test, its ports and the figures measured on the way."""

    platform: Platform
    ports: dict[str, int]
    metrics_port: int
    figures: dict[str, float] = field(default_factory=dict)
    unit_daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)
    billing_module: str = "billing_app"

    @property
    def root(self) -> Path:
        return self.platform.root

    def write_manifest(self, *, billing_module: str = "billing_app") -> None:
        """The manifest; ``billing_module`` is where a typo goes."""
        self.billing_module = billing_module
        p, ports, python = self.platform, self.ports, sys.executable
        data = self.root / "pgdata"
        uvicorn = [python, "-m", "uvicorn", "--app-dir", "apps", "--host", "127.0.0.1", "--port", "{port}"]
        p.tiers = {"infra": {"order": 0}, "backend": {"order": 1}, "frontend": {"order": 2}, "monitoring": {"order": 3}}
        p.supervisor.update(metrics=f"127.0.0.1:{self.metrics_port}", probe_interval="500ms")
        p.services = {
            "postgres": {
                "tier": "infra", "port": ports["postgres"], "user": "postgres", "stop_signal": "SIGINT", "stop_timeout": "20s",
                "command": [str(PG_BIN / "postgres"), "-D", str(data), "-p", "{port}", "-k", str(data),
                            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                "ready": {"exec": "pg_isready -h 127.0.0.1 -p {port}"}, "ready_timeout": "60s",
            },
            "redis": {
                "tier": "infra", "port": ports["redis"],
                "command": ["redis-server", "--port", "{port}", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                            "--dir", str(self.root)],
                "ready": {"exec": "redis-cli -p {port} ping"},
            },
            "migrate": {
                "tier": "backend", "kind": "oneshot", "depends_on": ["postgres"], "ready_timeout": "60s",
                "command": [python, "apps/manage.py", "migrate", "--noinput"], "env": {"PG_PORT": str(ports["postgres"])},
            },
            "django": {
                "tier": "backend", "port": ports["django"], "depends_on": ["postgres", "migrate"], "ready_timeout": "60s",
                "command": [python, "apps/manage.py", "runserver", "--noreload", "127.0.0.1:{port}"],
                "env": {"PG_PORT": str(ports["postgres"])}, "ready": {"http": "/health/"},
            },
            "api": {
                "tier": "backend", "port": ports["api"], "depends_on": ["redis"],
                "command": [*uvicorn, "api_app:app"], "ready": {"http": "/health"},
            },
            "billing-api": {
                "tier": "backend", "port": ports["billing-api"], "depends_on": ["postgres"],
                "command": [*uvicorn, f"{billing_module}:app"], "ready": {"http": "/health"},
                "start_limit": 3, "start_limit_window": "12s",
            },
            "frontend": {
                "tier": "frontend", "port": ports["frontend"], "depends_on": ["api"],
                "command": ["node", "apps/frontend.js"], "env": {"API_URL": f"http://127.0.0.1:{ports['api']}"},
                "ready": {"http": "/health"},
            },
            "prometheus": {
                "tier": "monitoring", "port": ports["prometheus"],
                "command": ["prometheus", f"--config.file={self.root / 'prometheus.yml'}",
                            f"--storage.tsdb.path={self.root / 'prometheus-data'}",
                            "--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                "ready": {"http": "/-/ready"},
            },
        }
        p.write()

    def write_programs(self) -> None:
        apps = self.root / "apps"
        (apps / "bizsite").mkdir(parents=True)
        (apps / "manage.py").write_text(DJANGO_MANAGE)
        (apps / "bizsite" / "__init__.py").write_text("")
        (apps / "bizsite" / "settings.py").write_text(DJANGO_SETTINGS)
        (apps / "bizsite" / "urls.py").write_text(DJANGO_URLS)
        (apps / "api_app.py").write_text(FASTAPI_APP)
        (apps / "billing_app.py").write_text(FASTAPI_APP)
        (apps / "frontend.js").write_text(NODE_FRONTEND)
        (self.root / "prometheus.yml").write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "svc", "static_configs": [{"targets": [f"127.0.0.1:{self.metrics_port}"]}]}],
        }))

    def states(self) -> dict[str, str]:
        return {name: s["state"] for name, s in self.platform.status().items()}

    def explain(self) -> str:
        """Each service's state and reason, for a failure message."""
        return "; ".join(f"{n}: {s['state']} {s['reason']}".rstrip() for n, s in self.platform.status().items())

    def leftovers(self) -> list[str]:
        """What of the platform still runs or holds a port: processes (by working folder) and ports."""
        daemon = self.platform.daemon_pid()
        found = [_describe(p) for p in _alive(self.platform.our_processes()) if p.pid != daemon]
        found += [f"port {port} ({name})" for name, port in self.ports.items() if port_accepts(port)]
        return found

    def daemon_alive(self) -> bool:
        pid = self.platform.daemon_pid()
        return pid is not None and psutil.pid_exists(pid)

    def stop_everything(self) -> None:
        """Back to nothing running, whatever a failed flow left: daemon shut down, the rest killed."""
        self.platform.cleanup()
        wait_until(lambda: not self.leftovers(), timeout=STOP_BOUND, what="the platform to be gone")


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in processes:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            continue
    return alive


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid} ({' '.join(proc.cmdline()[:3])})"
    except psutil.Error:
        return f"pid {proc.pid}"


def exits(log: Path) -> list[tuple[float, int]]:
    """(unix time, exit code) of every exit the supervisor marked in a service's log."""
    found = []
    for line in log.read_text().splitlines():
        stamp, _, text = line.partition(" ")
        if text.startswith("--- svc: pid ") and " exited with code " in text:
            when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC).timestamp()
            found.append((when, int(text.split(" exited with code ")[1].split()[0])))
    return found


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def prometheus_query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def timed_svc(platform: Platform, *args: str, bound: float) -> tuple[subprocess.CompletedProcess[str] | None, float]:
    """Run `svc ARGS`; (None, elapsed) when it did not end within ``bound`` (it is then killed)."""
    began = time.monotonic()
    try:
        result = platform.svc(*args, timeout=bound)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - began
    return result, time.monotonic() - began


@pytest.fixture(scope="module")
def bizosaas() -> Iterator[BizOSaaS]:
    why = missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real-software test: {why}")
        pytest.skip(why)
    with platform_other_users_can_enter("svc-bizosaas-") as platform:  # postgres must reach its data folder
        *service_ports, metrics_port = free_ports(len(LONG_RUNNING) + 1)
        biz = BizOSaaS(platform, dict(zip(LONG_RUNNING, service_ports, strict=True)), metrics_port)
        initdb(platform.root / "pgdata")
        biz.write_programs()
        biz.write_manifest()
        yield biz


@pytest.fixture
def up(bizosaas: BizOSaaS) -> BizOSaaS:
    """The whole platform ready (billing-api without its typo), its daemon started by `svc up`."""
    if bizosaas.billing_module != "billing_app":
        bizosaas.write_manifest()
        if bizosaas.daemon_alive():
            reload = bizosaas.platform.svc("reload", timeout=30)
            assert reload.returncode == 0, output(reload)
    result = bizosaas.platform.svc("up", timeout=180)
    assert result.returncode == 0, output(result)
    return bizosaas


def test_one_svc_up_brings_every_real_program_up_and_prometheus_sees_them(bizosaas: BizOSaaS) -> None:
    platform, ports = bizosaas.platform, bizosaas.ports
    began = time.monotonic()
    result = platform.svc("up", timeout=180)
    bizosaas.figures["up"] = time.monotonic() - began
    assert result.returncode == 0, output(result)
    status = platform.status()
    assert {n: s["state"] for n, s in status.items()} == {**dict.fromkeys(LONG_RUNNING, "ready"), "migrate": "exited"}
    assert status["migrate"]["exit_code"] == 0
    assert psutil.Process(status["postgres"]["pid"]).username() == "postgres"
    # order: the one-shot ran against a ready PostgreSQL, Django served after it, node after the API
    assert status["migrate"]["started_at"] >= status["postgres"]["ready_at"]
    (migrated_at, code), = exits(platform.state_dir / "logs" / "migrate.log")
    assert code == 0 and status["django"]["started_at"] >= migrated_at
    assert status["frontend"]["started_at"] >= status["api"]["ready_at"]
    for later in ("frontend", "prometheus"):  # a later tier starts after the backend tier settled
        assert status[later]["started_at"] >= max(status[b]["ready_at"] for b in ("django", "api", "billing-api"))

    # each program really works: Django reads the migrations it applied from PostgreSQL,
    # node answers with what the FastAPI app said
    code, django = get_json(f"http://127.0.0.1:{ports['django']}/health/")
    assert code == 200 and django["pid"] == status["django"]["pid"] and django["migrations"] >= 10, django
    code, through_node = get_json(f"http://127.0.0.1:{ports['frontend']}/")
    assert code == 200 and through_node == {"service": "api", "pid": status["api"]["pid"]}, through_node

    # Prometheus, itself a supervised service, scrapes svc_service_state for all of them
    def scraped_states() -> dict[str, str]:
        current = prometheus_query(ports["prometheus"], "svc_service_state == 1")
        return {r["metric"]["service"]: r["metric"]["state"] for r in current}

    expected = {**dict.fromkeys(LONG_RUNNING, "ready"), "migrate": "exited"}
    wait_until(lambda: scraped_states() == expected, timeout=30, interval=0.5, what="Prometheus to scrape every service's state")
    series = prometheus_query(ports["prometheus"], 'svc_service_state{state="ready"}')
    tiers = {r["metric"]["service"]: r["metric"]["tier"] for r in series}
    assert tiers == {"postgres": "infra", "redis": "infra", "django": "backend", "api": "backend", "billing-api": "backend",
                     "frontend": "frontend", "prometheus": "monitoring", "migrate": "backend"}


def break_billing_api(biz: BizOSaaS) -> None:
    """Stop billing-api and the services of later tiers, then put a typo in billing-api's module."""
    down = biz.platform.svc("down", "billing-api", "frontend", "prometheus", timeout=STOP_BOUND)
    assert down.returncode == 0, output(down)
    biz.write_manifest(billing_module="biling_app")
    reload = biz.platform.svc("reload", timeout=30)
    assert reload.returncode == 0, output(reload)


def up_with_a_typo(biz: BizOSaaS) -> tuple[subprocess.CompletedProcess[str] | None, float]:
    """Every healthy service ready, then `svc up` with billing-api's module misspelt."""
    ready = biz.platform.svc("up", timeout=180)
    assert ready.returncode == 0, output(ready)
    break_billing_api(biz)
    return timed_svc(biz.platform, "up", bound=CRASH_LOOP_BOUND)


def test_flow1_a_typo_in_a_uvicorn_module_fails_within_a_bound_and_up_names_it(up: BizOSaaS) -> None:
    platform = up.platform
    result, elapsed = up_with_a_typo(up)
    up.figures["crash_loop_up"] = elapsed
    assert result is not None, f"svc up still waiting after {elapsed:.0f}s: {up.explain()}"
    assert result.returncode == 1, output(result)
    assert "billing-api" in result.stdout + result.stderr, output(result)
    billing = platform.status()["billing-api"]
    assert billing["state"] == "failed" and billing["exit_code"] == 3, billing
    assert "start_limit" in billing["reason"], billing
    assert "biling_app" in platform.svc("logs", "billing-api", "-n", "50").stdout


def test_flow2_the_unrelated_services_come_up_in_the_up_where_a_backend_fails(bizosaas: BizOSaaS) -> None:
    """After flow 1's `svc up`: the later tiers started once billing-api had settled (as failed)."""
    if not (bizosaas.daemon_alive() and bizosaas.states()["billing-api"] == "failed"):  # run alone
        up_with_a_typo(bizosaas)
    status = bizosaas.platform.status()
    assert status["billing-api"]["state"] == "failed", status["billing-api"]
    for name in ("frontend", "prometheus"):
        assert status[name]["state"] == "ready", f"{name}: {status[name]['state']} ({status[name]['reason']})"


def test_flow1_down_then_up_again_ends_and_the_unrelated_services_come_up(bizosaas: BizOSaaS) -> None:
    up, platform = bizosaas, bizosaas.platform
    if not (up.daemon_alive() and up.billing_module != "billing_app"):  # run alone: the first half first
        up_with_a_typo(up)
    down = platform.svc("down", "billing-api", "frontend", "prometheus", timeout=STOP_BOUND)
    assert down.returncode == 0, output(down)
    # the same `up` as the first half's, so ten times what that one took (when it ran)
    bound = max(30.0, 10 * up.figures.get("crash_loop_up", CRASH_LOOP_BOUND / 10))
    result, elapsed = timed_svc(platform, "up", bound=bound)
    states = up.states()
    assert result is not None, f"svc up still waiting after {elapsed:.0f}s: {up.explain()}"
    assert result.returncode == 1 and "billing-api" in result.stdout + result.stderr, output(result)
    assert states["billing-api"] == "failed", states
    assert states["frontend"] == "ready" and states["prometheus"] == "ready", states


def test_flow2_a_stopped_backend_does_not_block_an_unrelated_frontend(bizosaas: BizOSaaS) -> None:
    up, platform = bizosaas, bizosaas.platform
    for step in (("down", "billing-api"), ("down", "frontend")):
        stopped = platform.svc(*step, timeout=STOP_BOUND)
        assert stopped.returncode == 0, output(stopped)
    result, elapsed = timed_svc(platform, "up", "frontend", bound=CRASH_LOOP_BOUND)
    assert result is not None, f"svc up frontend still waiting after {elapsed:.0f}s: {up.explain()}"
    assert result.returncode == 0, output(result)
    states = up.states()
    assert states["frontend"] == "ready" and states["billing-api"] == "stopped", states


def test_flow3_restart_with_dependents_reruns_the_one_shot_once_postgres_is_ready_again(up: BizOSaaS) -> None:
    platform, ports = up.platform, up.ports
    before = platform.status()
    runs_before = (platform.state_dir / "logs" / "migrate.log").read_text().count("Operations to perform")
    result, elapsed = timed_svc(platform, "restart", "postgres", "--with-dependents", bound=RESTART_BOUND)
    up.figures["restart_postgres"] = elapsed
    assert result is not None, f"svc restart still waiting after {elapsed:.0f}s: {up.explain()}"
    after = platform.status()
    assert result.returncode == 0, output(result)
    assert {n: s["state"] for n, s in after.items()} == {**dict.fromkeys(LONG_RUNNING, "ready"), "migrate": "exited"}
    for name in ("postgres", "django"):
        assert after[name]["pid"] != before[name]["pid"], name
    assert after["api"]["pid"] == before["api"]["pid"]  # not a dependent of postgres
    # the one-shot ran again, after the new PostgreSQL was ready, and succeeded; Django after it
    assert after["migrate"]["exit_code"] == 0
    assert after["migrate"]["started_at"] > before["migrate"]["started_at"]
    postgres_exits = exits(platform.state_dir / "logs" / "postgres.log")
    assert after["migrate"]["started_at"] >= after["postgres"]["ready_at"], (
        f"migrate spawned at {after['migrate']['started_at']:.3f}; the old postgres exited at {postgres_exits[-1][0]:.3f}, "
        f"the new one was spawned at {after['postgres']['started_at']:.3f} and ready at {after['postgres']['ready_at']:.3f}"
    )
    *_, (migrated_at, code) = exits(platform.state_dir / "logs" / "migrate.log")
    assert code == 0 and after["django"]["started_at"] >= migrated_at, (after["django"], migrated_at)
    assert (platform.state_dir / "logs" / "migrate.log").read_text().count("Operations to perform") == runs_before + 1
    code, django = get_json(f"http://127.0.0.1:{ports['django']}/health/")
    assert code == 200 and django["pid"] == after["django"]["pid"], django


def sigkill_the_daemon(platform: Platform) -> None:
    pid = platform.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_gone([pid], timeout=10)


def test_flow4_down_after_the_daemon_was_sigkilled_stops_the_survivors(up: BizOSaaS) -> None:
    platform = up.platform
    sigkill_the_daemon(platform)
    try:
        down, elapsed = timed_svc(platform, "down", bound=STOP_BOUND)
        assert down is not None, f"svc down still running after {elapsed:.0f}s"
        left = up.leftovers()
        assert down.returncode == 0 and not left, f"{output(down)}\nleft: {left}"
        assert "postgres" in down.stdout + down.stderr, output(down)  # it says what it stopped
    finally:
        up.stop_everything()


def test_flow4_shutdown_after_the_daemon_was_sigkilled_stops_the_survivors(bizosaas: BizOSaaS) -> None:
    platform = bizosaas.platform
    started = platform.svc("up", "frontend", timeout=120)  # frontend, api, redis
    assert started.returncode == 0, output(started)
    sigkill_the_daemon(platform)
    try:
        shutdown, elapsed = timed_svc(platform, "shutdown", bound=STOP_BOUND)
        assert shutdown is not None, f"svc shutdown still running after {elapsed:.0f}s"
        left = bizosaas.leftovers()
        assert shutdown.returncode == 0 and not left, f"{output(shutdown)}\nleft: {left}"
    finally:
        bizosaas.stop_everything()


def start_daemon_as_the_unit_does(biz: BizOSaaS) -> subprocess.Popen[bytes]:
    """As the unit's ExecStart runs it: the daemon in the foreground, from /, in a session of its own."""
    log_path = biz.root / "unit-daemon.log"
    with log_path.open("ab") as log:
        daemon = subprocess.Popen(
            [*SVC[:2], "supervisord_lite.daemon", "-f", str(biz.platform.manifest)],
            cwd="/", stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    biz.unit_daemons.append(daemon)

    def serving() -> bool:
        assert daemon.poll() is None, log_path.read_text()[-3000:]
        return biz.platform.svc("status", "--json", timeout=30).returncode == 0

    wait_until(serving, timeout=30, interval=0.1, what="the daemon to serve its control socket")
    return daemon


@pytest.fixture
def unit_daemon(bizosaas: BizOSaaS) -> Iterator[BizOSaaS]:
    """Nothing of the platform running before; every daemon the test started as the unit does ended after."""
    bizosaas.stop_everything()
    try:
        yield bizosaas
    finally:
        for daemon in bizosaas.unit_daemons:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=STOP_BOUND)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait(timeout=10)
        bizosaas.unit_daemons.clear()
        bizosaas.stop_everything()


def test_flow9_the_unit_daemon_stops_every_service_cleanly_on_sigterm(unit_daemon: BizOSaaS) -> None:
    """systemd's stop: SIGTERM to the daemon alone; it stops every service and exits 0."""
    biz, platform = unit_daemon, unit_daemon.platform
    biz.write_manifest()
    daemon = start_daemon_as_the_unit_does(biz)
    began = time.monotonic()
    result = platform.svc("up", timeout=180)
    biz.figures["unit_up"] = time.monotonic() - began
    assert result.returncode == 0, output(result)
    down = platform.svc("down", "frontend", timeout=STOP_BOUND)  # a wish the next start must remember
    assert down.returncode == 0, output(down)
    assert biz.states() == {**dict.fromkeys(LONG_RUNNING, "ready"), "migrate": "exited", "frontend": "stopped"}
    tree = [p.pid for p in biz.platform.our_processes()]
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=STOP_BOUND) == 0, (biz.root / "unit-daemon.log").read_text()[-3000:]
    wait_gone(tree, timeout=10)
    assert not biz.leftovers()
    biz.figures["unit_stopped_cleanly"] = 1


def test_flow9_the_unit_daemon_started_again_brings_the_wanted_services_back(unit_daemon: BizOSaaS) -> None:
    biz = unit_daemon
    if "unit_stopped_cleanly" not in biz.figures:
        pytest.skip("needs the clean stop of the test before")
    start_daemon_as_the_unit_does(biz)
    bound = max(30.0, 10 * biz.figures["unit_up"])  # ten times what the same `svc up` took before the stop
    wanted = {**dict.fromkeys(set(LONG_RUNNING) - {"frontend"}, "ready"), "migrate": "exited"}

    def back() -> bool:
        return {n: s for n, s in biz.states().items() if n != "frontend"} == wanted

    wait_until(back, timeout=bound, interval=0.2, what="the wanted services to come back without `svc up`")
    assert biz.states()["frontend"] == "stopped", biz.explain()  # `svc down frontend` before the stop is remembered

