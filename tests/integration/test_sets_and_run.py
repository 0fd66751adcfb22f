"""Sets of services (@group, tier names) and `svc run`, through the real CLI and daemon.

The services are the demo stand-in on free ports; `svc run`'s command is
tests/fakes/cmd_for_run.py, which writes the SVC_* variables it got and exits with
the code it is told (or waits for a signal).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import FAKES, wait_until
from tests.integration.harness import SVC, Platform, port_accepts, wait_gone

CMD = [sys.executable, str(FAKES / "cmd_for_run.py")]


def sets_platform(platform: Platform) -> dict[str, int | None]:
    """db and cache (tier infra), api and worker (tier app, group backend; api needs db), web (tier web)."""
    ports = {
        "db": platform.add("db", tier="infra", groups=["data"]),
        "cache": platform.add("cache", tier="infra", groups=["data"]),
        "api": platform.add("api", tier="app", depends_on=["db"], groups=["backend"], url="http://127.0.0.1:{port}/"),
        "worker": platform.add("worker", tier="app", port=None, groups=["backend"]),
        "web": platform.add("web", tier="web", depends_on=["api"]),
    }
    platform.write()
    return ports


def states(platform: Platform) -> dict[str, str]:
    return {name: s["state"] for name, s in platform.status().items()}


def test_group_and_tier_selectors_for_up_status_and_down(platform: Platform) -> None:
    sets_platform(platform)

    up = platform.svc("up", "@backend")
    assert up.returncode == 0, up.stderr
    assert "3/3 services ready" in up.stdout  # api, worker, and db that api needs
    assert states(platform) == {"db": "ready", "cache": "stopped", "api": "ready", "worker": "ready", "web": "stopped"}

    filtered = json.loads(platform.svc("status", "--json", "@backend", check=True).stdout)
    assert [s["name"] for s in filtered["services"]] == ["api", "worker"]
    table = platform.svc("status", "infra", check=True).stdout.splitlines()
    assert table[0].split()[:3] == ["SERVICE", "TIER", "PORT"]
    assert [line.split()[0] for line in table[1:] if line.strip()] == ["db", "cache"]

    assert platform.svc("up", "infra", check=True).returncode == 0
    assert states(platform)["cache"] == "ready"

    down = platform.svc("down", "tier:infra")
    assert down.returncode == 0, down.stderr
    # a tier goes down with what depends on it: api (on db), not worker (no dependency)
    assert states(platform) == {"db": "stopped", "cache": "stopped", "api": "stopped", "worker": "ready", "web": "stopped"}
    assert platform.svc("down", "@backend", check=True).stdout.strip() == "stopped 1 service: worker"


def test_ambiguous_and_unknown_selectors_are_refused_with_the_way_out(platform: Platform) -> None:
    platform.add("infra", tier="app")  # a service with a tier's name
    platform.add("db", tier="infra", groups=["data"])
    platform.write()

    ambiguous = platform.svc("up", "infra")
    assert ambiguous.returncode == 2
    assert '"infra" is both a service and a tier' in ambiguous.stderr
    assert '"service:infra"' in ambiguous.stderr and '"tier:infra"' in ambiguous.stderr
    assert platform.daemon_pid() is None  # refused before anything started

    typo = platform.svc("status", "@dat")
    assert typo.returncode == 2 and 'no group named "dat"' in typo.stderr and 'did you mean "@data"?' in typo.stderr
    unknown = platform.svc("down", "dbb")
    assert unknown.returncode == 2 and 'no service named "dbb"' in unknown.stderr and '"db"' in unknown.stderr

    guide = json.loads(platform.svc("ports", "--format", "json", "tier:infra", check=True).stdout)
    assert [row["service"] for tier in guide["tiers"] for row in tier["services"]] == ["db"]
    guide = json.loads(platform.svc("ports", "--format", "json", "service:infra", check=True).stdout)
    assert [row["service"] for tier in guide["tiers"] for row in tier["services"]] == ["infra"]


def test_restart_with_no_name_restarts_every_running_service_in_order(platform: Platform) -> None:
    sets_platform(platform)
    nothing = platform.svc("restart")
    assert nothing.returncode == 0 and "nothing is running" in nothing.stdout

    platform.svc("up", "api", "cache", check=True)
    before = platform.status()
    result = platform.svc("restart")
    assert result.returncode == 0, result.stderr
    assert "3/3 services ready" in result.stdout
    after = platform.status()
    for name in ("db", "cache", "api"):
        assert after[name]["state"] == "ready" and after[name]["pid"] != before[name]["pid"], name
    assert after["worker"]["state"] == after["web"]["state"] == "stopped"
    # in order: api started again only after db listened again
    db_listening = max(r["time"] for r in platform.events("listening", "db"))
    api_spawned = max(r["time"] for r in platform.events("spawned", "api"))
    assert api_spawned > db_listening


def test_run_propagates_the_exit_code_and_stops_only_what_it_started(platform: Platform, tmp_path: Path) -> None:
    ports = sets_platform(platform)
    platform.svc("up", "db", check=True)
    db_pid = platform.status()["db"]["pid"]
    out = tmp_path / "env.json"

    result = platform.svc("run", "--needs", "@backend", "--", *CMD, str(out), "7")
    assert result.returncode == 7, result.stderr
    env = json.loads(out.read_text())
    assert env["SVC_API_PORT"] == str(ports["api"]) and env["SVC_DB_PORT"] == str(ports["db"])
    assert env["SVC_API_URL"] == f"http://127.0.0.1:{ports['api']}/"
    assert "SVC_WORKER_PORT" not in env and "SVC_CACHE_PORT" not in env  # no port; not needed
    assert env["SVC_MANIFEST"] == str(platform.manifest.resolve())
    after = platform.status()
    assert after["db"]["state"] == "ready" and after["db"]["pid"] == db_pid  # it was running before: it stays
    assert after["api"]["state"] == after["worker"]["state"] == "stopped"
    assert not port_accepts(ports["api"])  # type: ignore[arg-type]
    assert "stopped what it started: api, worker" in result.stderr


def test_run_with_no_daemon_leaves_nothing_running(platform: Platform, tmp_path: Path) -> None:
    ports = sets_platform(platform)
    out = tmp_path / "env.json"
    result = platform.svc("run", "--", *CMD, str(out), "0")
    assert result.returncode == 0, result.stderr
    env = json.loads(out.read_text())
    assert {k for k in env if k.endswith("_PORT")} == {"SVC_DB_PORT", "SVC_CACHE_PORT", "SVC_API_PORT", "SVC_WEB_PORT"}
    wait_until(lambda: not platform.our_processes(), timeout=15, what="the daemon and every service to be gone")
    assert not any(port_accepts(p) for p in ports.values() if p)


def test_run_exits_1_naming_the_service_that_failed_and_does_not_run_the_command(platform: Platform, tmp_path: Path) -> None:
    platform.services["db"] = {"tier": "infra", "command": "no-such-binary-xyz", "port": platform.free_port(), "failed_retry": 0}
    platform.add("cache", tier="infra")
    platform.add("api", depends_on=["db"])
    platform.write()
    out = tmp_path / "env.json"

    result = platform.svc("run", "--", *CMD, str(out), "0")
    assert result.returncode == 1
    assert "the platform did not come up" in result.stderr and "db" in result.stderr
    assert "no-such-binary-xyz" in result.stderr  # why
    assert not out.exists()
    wait_until(lambda: not platform.our_processes(), timeout=15, what="the daemon and every service to be gone")


def test_run_timeout_names_what_was_not_ready(platform: Platform, tmp_path: Path) -> None:
    platform.add("slow", tier="infra", args="--delay 60")
    platform.write()
    result = platform.svc("run", "--timeout", "1s", "--", *CMD, str(tmp_path / "env.json"), "0")
    assert result.returncode == 1
    assert "not ready within 1s" in result.stderr and "slow" in result.stderr
    wait_until(lambda: not platform.our_processes(), timeout=15, what="the daemon and every service to be gone")


def _spawn_run(platform: Platform, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SVC, "run", "--manifest", str(platform.manifest), *args],
        cwd=platform.root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_run_goes_to_the_command_then_everything_started_is_stopped(
    platform: Platform, tmp_path: Path, signum: signal.Signals
) -> None:
    ports = sets_platform(platform)
    out = tmp_path / "env.json"
    run = _spawn_run(platform, "--needs", "api", "--", *CMD, str(out), "5", "--wait-signal")
    try:
        started = Path(str(out) + ".started")
        wait_until(started.exists, timeout=60, what="the command to start")
        cmd_pid = int(started.read_text())
        run.send_signal(signum)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 5, stderr  # the command's own code after it handled the signal
    assert Path(str(out) + ".signal").read_text() == signum.name
    wait_gone([cmd_pid])
    wait_until(lambda: not platform.our_processes(), timeout=15, what="the daemon and every service to be gone")
    assert not port_accepts(ports["db"]) and not port_accepts(ports["api"])  # type: ignore[arg-type]


def _state_of(platform: Platform, name: str) -> str | None:
    """The service's state, or None while no daemon answers yet."""
    result = platform.svc("status", "--json")
    if result.returncode != 0:
        return None
    return next((s["state"] for s in json.loads(result.stdout)["services"] if s["name"] == name), None)


def test_sigterm_while_the_platform_comes_up_stops_what_was_started(platform: Platform, tmp_path: Path) -> None:
    platform.add("db", tier="infra")
    platform.add("slow", tier="app", args="--delay 60", depends_on=["db"])
    platform.write()
    run = _spawn_run(platform, "--", *CMD, str(tmp_path / "env.json"), "0")
    try:
        wait_until(lambda: _state_of(platform, "slow") == "starting", timeout=60, what="slow to be starting")
        slow_pid = platform.status()["slow"]["pid"]
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM" in stderr
    wait_gone([slow_pid])
    wait_until(lambda: not platform.our_processes(), timeout=15, what="the daemon and every service to be gone")
    assert not (tmp_path / "env.json").exists()


def test_run_leaves_a_daemon_that_was_running_before(platform: Platform, tmp_path: Path) -> None:
    """A daemon that was running before `svc run` stays, with what it ran."""
    platform.add("db", tier="infra")
    platform.add("api")
    platform.write()
    platform.svc("up", "db", check=True)
    daemon = platform.daemon_pid()
    result = platform.svc("run", "--", *CMD, str(tmp_path / "env.json"), "0")
    assert result.returncode == 0, result.stderr
    assert platform.daemon_pid() == daemon and daemon is not None and psutil.pid_exists(daemon)
    assert states(platform) == {"db": "ready", "api": "stopped"}


@pytest.mark.parametrize("bad", [["--needs", "nope"], ["--timeout", "soon"]])
def test_run_usage_errors_exit_2_before_anything_starts(platform: Platform, bad: list[str]) -> None:
    platform.add("db", tier="infra")
    platform.write()
    result = platform.svc("run", *bad, "--", "true")
    assert result.returncode == 2, result.stderr
    assert platform.daemon_pid() is None


def test_changing_groups_restarts_nothing_on_reload(platform: Platform) -> None:
    platform.add("api", groups=["backend"])
    platform.write()
    platform.svc("up", check=True)
    pid = platform.status()["api"]["pid"]
    platform.services["api"]["groups"] = ["backend", "payments"]
    platform.write()
    reload = platform.svc("reload", check=True)
    assert "restarted" not in reload.stdout and "changed" not in reload.stdout, reload.stdout
    assert platform.status()["api"]["pid"] == pid
    assert [s["name"] for s in json.loads(platform.svc("status", "--json", "@payments", check=True).stdout)["services"]] == ["api"]


def test_run_of_a_command_that_does_not_exist_exits_127_and_cleans_up(platform: Platform) -> None:
    platform.add("db", tier="infra")
    platform.write()
    result = platform.svc("run", "--", "no-such-command-xyz", "--flag")
    assert result.returncode == 127
    assert "no-such-command-xyz: command not found" in result.stderr
    wait_until(lambda: not platform.our_processes(), timeout=15, what="the daemon and every service to be gone")
