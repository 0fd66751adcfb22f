"""The demo stand-in service, run as a real process: the options other tests rely on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from supervisord_lite.demo import read_records
from tests.conftest import free_port, free_ports, wait_until
from tests.integration.harness import gone


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode()


def sigterm_ignored(pid: int) -> bool:
    """Whether the process ignores SIGTERM, from the kernel's own mask."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@dataclass
class Demo:
    proc: subprocess.Popen[bytes]
    port: int | None
    record: Path
    out: Path

    def events(self, kind: str | None = None) -> list[dict[str, object]]:
        return [e for e in read_records(self.record) if kind is None or e["event"] == kind]

    def output(self) -> str:
        return self.out.read_text()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    """Start ``python -m supervisord_lite.demo`` in its own process group; every
    process it made (group, recorded grandchildren) is killed afterwards."""
    started: list[Demo] = []

    def start(*args: str, port: int | None = None, name: str = "svc-a") -> Demo:
        i = len(started)
        record, out = tmp_path / f"record{i}.jsonl", tmp_path / f"out{i}.log"
        argv = [sys.executable, "-m", "supervisord_lite.demo", "--name", name, "--record", str(record), *args]
        if port is not None:
            argv += ["--port", str(port)]
        with out.open("wb") as sink:
            proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        d = Demo(proc, port, record, out)
        started.append(d)
        return d

    try:
        yield start
    finally:
        for d in started:
            pids = [int(str(e["child_pid"])) for e in d.events() if "child_pid" in e]
            try:
                os.killpg(d.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for pid in pids:
                if not gone(pid):
                    os.kill(pid, signal.SIGKILL)
            d.proc.wait(5)


def test_serves_health_and_a_page_naming_it_and_stops_on_sigterm(demo: Callable[..., Demo]) -> None:
    port = free_port()
    d = demo("--description", "Main backend orchestration", port=port, name="fastapi-hub")
    wait_until(lambda: accepts(port), 5, what=f"demo listening on {port}")

    assert http_get(port, "/health") == (200, "ok\n")
    status, page = http_get(port, "/admin")
    assert status == 200 and "<h1>fastapi-hub</h1>" in page and "Main backend orchestration" in page

    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0
    assert [e["event"] for e in d.events()] == ["spawned", "listening", "stopping"]
    times = [float(str(e["time"])) for e in d.events()]
    assert times == sorted(times)
    assert {e["pid"] for e in d.events()} == {d.proc.pid}
    assert d.events("listening")[0]["port"] == port
    out = d.output()
    assert '"GET /health HTTP/1.1" 200' in out and '"GET /admin HTTP/1.1" 200' in out


def test_name_defaults_to_svc_service(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SVC_SERVICE": "crm", "PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "supervisord_lite.demo"], env=env,
                            stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: accepts(port), 5, what="demo listening on $PORT")
        assert "<h1>crm</h1>" in http_get(port, "/")[1]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_delay_holds_the_port_closed_that_long(demo: Callable[..., Demo]) -> None:
    port = free_port()
    d = demo("--delay", "0.6", port=port)
    wait_until(lambda: d.events("spawned"), 5, what="spawned record")
    assert not accepts(port)
    wait_until(lambda: accepts(port), 5, what="port open after the delay")
    spawned, listening = d.events("spawned")[0], d.events("listening")[0]
    assert float(str(listening["time"])) - float(str(spawned["time"])) >= 0.6


def test_crash_after_exits_with_the_exit_code(demo: Callable[..., Demo]) -> None:
    port = free_port()
    d = demo("--crash-after", "0.3", "--exit-code", "3", port=port)
    assert d.proc.wait(5) == 3
    assert [e["event"] for e in d.events()] == ["spawned", "listening", "crashing"]
    assert float(str(d.events("crashing")[0]["time"])) - float(str(d.events("listening")[0]["time"])) >= 0.3
    assert "crashing with exit code 3" in d.output()


def test_ignore_sigterm_with_grandchild_needs_sigkill_of_the_group(demo: Callable[..., Demo]) -> None:
    port = free_port()
    d = demo("--ignore-sigterm", "--grandchild", port=port)
    wait_until(lambda: accepts(port), 5, what="listening")
    grandchild = int(str(d.events("grandchild")[0]["child_pid"]))
    assert os.getpgid(grandchild) == d.proc.pid  # same process group as the service
    wait_until(lambda: sigterm_ignored(grandchild), 5, what="grandchild ignoring SIGTERM")

    os.killpg(d.proc.pid, signal.SIGTERM)
    wait_until(lambda: d.events("sigterm_ignored"), 5, what="SIGTERM noted and ignored")
    assert d.proc.poll() is None and not gone(grandchild)
    assert http_get(port, "/health")[0] == 200

    os.killpg(d.proc.pid, signal.SIGKILL)
    assert d.proc.wait(5) == -signal.SIGKILL
    wait_until(lambda: gone(grandchild), 5, what="grandchild killed with the group")
    assert not d.events("stopping")


def test_grandchild_dies_with_a_group_sigterm(demo: Callable[..., Demo]) -> None:
    port = free_port()
    d = demo("--grandchild", port=port)
    wait_until(lambda: accepts(port), 5, what="listening")
    grandchild = int(str(d.events("grandchild")[0]["child_pid"]))
    os.killpg(d.proc.pid, signal.SIGTERM)
    assert d.proc.wait(5) == 0
    wait_until(lambda: gone(grandchild), 5, what="grandchild gone")


def test_daemonized_grandchild_escapes_the_process_group(demo: Callable[..., Demo]) -> None:
    port = free_port()
    d = demo("--daemonize-grandchild", "--grandchild-lifetime", "30", port=port)
    wait_until(lambda: accepts(port), 5, what="listening")
    escaped = int(str(d.events("daemonized_grandchild")[0]["child_pid"]))
    assert os.getpgid(escaped) != d.proc.pid and os.getsid(escaped) != os.getsid(d.proc.pid)
    assert escaped not in {p.pid for p in psutil.Process(d.proc.pid).children(recursive=True)}
    os.killpg(d.proc.pid, signal.SIGKILL)
    d.proc.wait(5)
    assert not gone(escaped)  # the fixture kills it by pid


def test_fail_health_after_turns_health_to_500(demo: Callable[..., Demo]) -> None:
    port = free_port()
    demo("--fail-health-after", "0.5", port=port)
    wait_until(lambda: accepts(port), 5, what="listening")
    assert http_get(port, "/health")[0] == 200
    wait_until(lambda: http_get(port, "/health")[0] == 500, 5, what="/health answering 500")
    assert http_get(port, "/")[0] == 200


def test_ready_line_comes_after_earlier_lines_once_listening(demo: Callable[..., Demo]) -> None:
    port = free_port()
    d = demo("--ready-line", "Application startup complete.", port=port)
    wait_until(lambda: "Application startup complete." in d.output(), 5, what="ready line")
    lines = d.output().splitlines()
    ready = lines.index("Application startup complete.")
    assert ready >= 3 and any("listening on" in line for line in lines[:ready])
    assert accepts(port)


def test_worker_without_port_logs_a_heartbeat(demo: Callable[..., Demo]) -> None:
    d = demo("--no-port", "--heartbeat", "0.1", "--ready-line", "worker ready")
    wait_until(lambda: "heartbeat 2" in d.output(), 5, what="two heartbeats")
    assert "worker ready" in d.output()
    assert [e["event"] for e in d.events()] == ["spawned", "started"]
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0


@pytest.mark.parametrize(("extra", "code"), [((), 0), (("--exit-code", "4"), 4)])
def test_oneshot_works_then_exits(demo: Callable[..., Demo], extra: tuple[str, ...], code: int) -> None:
    d = demo("--oneshot", "0.3", *extra)
    assert d.proc.wait(5) == code
    done = d.events("done")[0]
    assert done["exit_code"] == code
    assert float(str(done["time"])) - float(str(d.events("spawned")[0]["time"])) >= 0.3


def test_flood_then_keeps_serving(demo: Callable[..., Demo]) -> None:
    port = free_port()
    d = demo("--flood-bytes", "2000000", port=port)
    wait_until(lambda: "flood done" in d.output(), 10, what="flood finished")
    assert d.out.stat().st_size >= 2_000_000
    assert http_get(port, "/health")[0] == 200


def test_leak_grows_rss(demo: Callable[..., Demo]) -> None:
    port = free_port()
    d = demo("--leak-mb-per-second", "40", port=port)
    wait_until(lambda: accepts(port), 5, what="listening")
    before = psutil.Process(d.proc.pid).memory_info().rss
    wait_until(lambda: psutil.Process(d.proc.pid).memory_info().rss > before + 20 * 2**20, 5,
               what="RSS 20 MB above its start")


def test_port_in_use_exits_1_saying_so(demo: Callable[..., Demo]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        d = demo(port=port)
        assert d.proc.wait(5) == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in d.output()
    assert d.events("bind_failed")


# -- config/demo.toml ---------------------------------------------------------------

DEMO_TOML = Path(__file__).resolve().parents[2] / "config" / "demo.toml"


def test_demo_manifest_has_no_problems_and_the_reference_topology() -> None:
    from supervisord_lite.core.manifest import analyse
    from supervisord_lite.core.model import Status

    from supervisord_lite.host.portinfo import ephemeral_warnings

    manifest, problems = analyse(DEMO_TOML.read_text(), DEMO_TOML)
    assert manifest is not None and not problems, "\n".join(map(str, problems))
    assert ephemeral_warnings(manifest, (32768, 60999)) == []  # Linux's default ephemeral range
    by_tier: dict[str, set[str]] = {}
    for s in manifest.services.values():
        by_tier.setdefault(s.tier, set()).add(s.name)
    assert by_tier["infrastructure"] == {"postgres", "bizosaas-postgres", "redis", "saleor-redis"}
    assert by_tier["backend"] == {"fastapi-hub", "django-crm", "wagtail-cms", "saleor"}
    assert len(by_tier["frontend"]) == 7
    super_admin = manifest.services["super-admin"]
    assert super_admin.status is Status.DEPRECATED and super_admin.replaced_by == "admin"
    assert manifest.services["admin"].url.endswith("/admin")
    assert manifest.supervisor.metrics == "127.0.0.1:9108"
    for s in manifest.active():
        # above the real services' ports (the guide's + 20000), below Linux's default ephemeral
        # range (32768-60999), where an outgoing connection may hold a port at any moment
        assert s.port is not None and 20000 <= s.port < 32768, f"{s.name}: {s.port} is out of the demo's band"
        assert s.command[:3] == ("python", "-m", "supervisord_lite.demo"), s.name


def test_every_demo_command_runs_and_answers_health(demo: Callable[..., Demo]) -> None:
    """Each active service's command, on a free port instead of its fixed one."""
    import shlex
    import tomllib

    services = tomllib.loads(DEMO_TOML.read_text())["services"]
    active = {name: s for name, s in services.items() if s.get("status", "active") == "active"}
    started = {}
    for (name, s), port in zip(active.items(), free_ports(len(active)), strict=True):
        argv = [a.replace("{name}", name).replace("{port}", str(port)) for a in shlex.split(s["command"])]
        assert argv[:3] == ["python", "-m", "supervisord_lite.demo"] and "--port" in argv
        started[name] = (port, demo(*argv[3:], name=name))  # the fixture adds our interpreter and --record
    for name, (port, _d) in started.items():
        wait_until(lambda port=port: accepts(port), 10, what=f"{name} listening")
        assert http_get(port, "/health") == (200, "ok\n")
        assert f"<h1>{name}</h1>" in http_get(port, "/")[1]
