"""What the daemon loads before it serves: heavy libraries only work needs later (RE2
for a ready.log pattern, prometheus_client for a scrape) load on first use."""

from __future__ import annotations

import subprocess
import sys

_START = (
    "import sys\n"
    "sys.modules['rich'] = None\n"  # as the daemon's entry point does
    "import supervisord_lite.daemon.main\n"
    "from supervisord_lite.daemon.httpserver import MetricsServer\n"
    "from supervisord_lite.daemon.metrics import Metrics\n"
    "from supervisord_lite.daemon.statuspage import routes\n"
    "from supervisord_lite.runtime.logs import configure_logging\n"
    "metrics = Metrics(lambda: None)\n"
)


def _loaded(code: str) -> set[str]:
    probe = _START + code + "print(','.join(sorted(m.split('.')[0] for m in sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout
    return set(out.strip().splitlines()[-1].split(","))


def test_the_daemon_starts_without_re2_and_prometheus_client() -> None:
    loaded = _loaded("")
    assert "supervisord_lite" in loaded and "anyio" in loaded
    assert not loaded & {"re2", "prometheus_client"}, loaded & {"re2", "prometheus_client"}


def test_they_load_when_their_work_comes() -> None:
    loaded = _loaded(
        "from supervisord_lite.runtime.logmatch import compile_log_pattern\n"
        "assert compile_log_pattern('ready on \\\\d+').search('ready on 8080')\n"
        "from supervisord_lite.core.snapshot import SupervisorSnapshot\n"
        "metrics = Metrics(lambda: SupervisorSnapshot(name='n', manifest='m', pid=1, started_at=0.0, services=()))\n"
        "metrics.observe_probe('api', 8000, 0.001)\n"
        "body = metrics.render()[0].decode()\n"
        "assert 'svc_port_probe_duration_seconds_bucket{service=\"api\",port=\"8000\",le=\"0.001\"} 1' in body, body\n"
        "assert 'process_resident_memory_bytes' in body and 'python_info' in body\n"
    )
    assert {"re2", "prometheus_client"} <= loaded
