"""What the daemon loads before it serves: heavy libraries only work needs later (RE2
for a ready.log pattern, http.server and the status page's assets for a first request)
load on first use; prometheus_client only for whoever asks for the metrics' registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_START = (
    "import sys\n"
    "from supervisord_lite.daemon.__main__ import import_structlog_without_rich\n"
    "import_structlog_without_rich()\n"  # as the daemon's entry point does
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


def test_re2_loads_when_a_log_pattern_comes_and_a_scrape_needs_no_prometheus_client() -> None:
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
    assert "re2" in loaded
    assert "prometheus_client" not in loaded


def test_prometheus_client_loads_for_whoever_asks_for_the_registry() -> None:
    loaded = _loaded(
        "from supervisord_lite.core.snapshot import SupervisorSnapshot\n"
        "metrics = Metrics(lambda: SupervisorSnapshot(name='n', manifest='m', pid=1, started_at=0.0, services=()))\n"
        "assert 'python_info' in {family.name for family in metrics.registry.collect()}\n"
    )
    assert "prometheus_client" in loaded


_LATER = {"h11", "http.server", "email.message", "importlib.resources", "zipfile", "encodings.idna", "html"}


def test_the_http_endpoint_listens_without_its_parser_and_loads_it_at_the_first_request() -> None:
    probe = _START + (
        "from supervisord_lite.core.snapshot import SupervisorSnapshot\n"
        "snap = lambda: SupervisorSnapshot(name='n', manifest='m', pid=1, started_at=0.0, services=())\n"
        "server = MetricsServer(('127.0.0.1', 0), snap, extra_routes=routes(get_snapshot=snap, "
        "get_manifest=lambda: None, tail=lambda name, n: []))\n"
        "server.start()\n"
        f"print('OUT', sorted(set({sorted(_LATER)!r}) & set(sys.modules)))\n"
        "import urllib.request\n"  # (it loads email itself)
        "with urllib.request.urlopen(server.url + '/healthz', timeout=60) as r:\n"
        "    print('OUT', r.status, r.headers['Server'])\n"
        "import supervisord_lite.daemon.statuspage as page\n"
        "print('OUT', 'sha256-' in page.page_and_csp()[1] and '{{SCRIPT}}' not in page.page_and_csp()[0])\n"
        "server.stop()\n"
        "print('OUT', 'h11' in sys.modules, 'http.server' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    said = [line for line in out.stdout.splitlines() if line.startswith("OUT ")]  # the daemon's log aside
    assert said == ["OUT []", "OUT 200 supervisord-lite", "OUT True", "OUT True False"], out.stdout


def _run_python(code: str, cwd: Path | None = None) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def test_the_daemon_entry_point_runs_without_rich_yet_leaves_it_importable(tmp_path: Path) -> None:
    """The real entry (``python -m supervisord_lite.daemon``'s run) up to the manifest's
    refusal: structlog and the logging set-up loaded, rich, shutil and argparse not (the
    command line `svc up` gives is read without it); rich stays importable."""
    (tmp_path / "svc.toml").write_text("[services.api]\ncommand = 42\n")
    out = _run_python(
        "import sys\n"
        "from supervisord_lite.daemon.__main__ import run\n"
        "code = run(['-f', 'svc.toml', '--console-logs'])\n"
        "print(code, 'structlog' in sys.modules, 'rich' in sys.modules, 'shutil' in sys.modules, 'argparse' in sys.modules)\n"
        "import rich.text\n"
        "print(rich.text.Text('still there'))\n",
        cwd=tmp_path,
    )
    assert out[-2:] == ["2 True False False False", "still there"], out  # shutil: argparse's, with lzma and bz2


_LOG_AN_EXCEPTION = (
    "import io, sys\n"
    "{setup}"
    "from supervisord_lite.runtime.logs import configure_logging, get_logger\n"
    "out = io.StringIO()\n"
    "configure_logging(json_output={json}, stream=out)\n"
    "def reload_the_manifest():\n"
    "    raise ValueError('the file went away')\n"
    "try:\n"
    "    reload_the_manifest()\n"
    "except ValueError:\n"
    "    get_logger().exception('control request failed', op='reload')\n"
    "print(out.getvalue())\n"
    "print('rich loaded:', 'rich' in sys.modules)\n"
)
_WITHOUT_RICH = "from supervisord_lite.daemon.__main__ import import_structlog_without_rich\nimport_structlog_without_rich()\n"


def test_an_exception_in_the_daemon_logs_a_readable_traceback_with_or_without_rich() -> None:
    without = _run_python(_LOG_AN_EXCEPTION.format(setup=_WITHOUT_RICH, json=False))
    with_rich = _run_python(_LOG_AN_EXCEPTION.format(setup="import rich.console\nrich.console.Console\n", json=False))
    assert without[-1] == "rich loaded: False" and with_rich[-1] == "rich loaded: True"
    text = "\n".join(without)
    assert "control request failed" in text and "op=reload" in text
    assert "Traceback (most recent call last):" in text
    assert "in reload_the_manifest" in text and "ValueError: the file went away" in text
    # the same plain traceback either way (the timestamped first line aside)
    assert without[1:-1] == with_rich[1:-1]


def test_an_exception_in_the_json_log_carries_its_traceback() -> None:
    import json

    lines = _run_python(_LOG_AN_EXCEPTION.format(setup=_WITHOUT_RICH, json=True))
    record = json.loads(lines[0])
    assert record["event"] == "control request failed" and record["level"] == "error"
    assert "Traceback (most recent call last):" in record["exception"]
    assert "ValueError: the file went away" in record["exception"]


@pytest.mark.parametrize(
    "argv",
    [
        ["-f", "svc.toml"],
        ["-f", "svc.toml", "--json-logs"],
        ["--console-logs", "--manifest", "a/svc.toml", "-f", "b.toml", "--manifest=c.toml"],
        ["-f", "svc.toml", "--json-logs", "--json-logs"],
        ["-f", "/abs path/with spaces.toml", "--console-logs"],
    ],
)
def test_the_plain_command_line_reads_as_argparse_reads_it(argv: list[str]) -> None:
    from supervisord_lite.daemon.__main__ import parse_arguments, plain_arguments

    assert plain_arguments(argv) == parse_arguments(argv)


@pytest.mark.parametrize(
    "argv",
    [[], ["--help"], ["-f"], ["-f", ""], ["-f", "-x"], ["-fsvc.toml"], ["--json-logs"], ["-f", "a", "--json-logs", "--console-logs"],
     ["-f", "a", "--json"], ["-f", "a", "extra"]],
)
def test_any_other_command_line_goes_to_argparse(argv: list[str]) -> None:
    """Help, mistakes and abbreviations are argparse's to read and word."""
    from supervisord_lite.daemon.__main__ import plain_arguments

    assert plain_arguments(argv) is None
