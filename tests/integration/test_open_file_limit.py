"""A platform larger than the usual open-file limit: each running service holds three
descriptors in the daemon (log, output pipe, pidfd), so with a soft limit of 1024 a
daemon that did not raise it stopped at about 300 services with "Too many open files"."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

from tests.integration.harness import SVC, Platform

SERVICES = 120  # 3 x 120 + the daemon's own: far past a soft limit of 200


def _svc_with_open_file_limit(platform: Platform, soft: int, hard: int, *args: str) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run([*SVC, *args[:1], "--manifest", str(platform.manifest), *args[1:]], capture_output=True,
                          text=True, timeout=120, cwd=platform.root, stdin=subprocess.DEVNULL, preexec_fn=limit)


def _many_quiet_services(platform: Platform) -> None:
    for i in range(SERVICES):
        platform.services[f"s{i:03d}"] = {"tier": "app", "command": ["sleep", "600"]}
    platform.write()


def _daemon_limit(platform: Platform) -> int:
    pid = platform.daemon_pid()
    assert pid is not None
    line = next(l for l in Path(f"/proc/{pid}/limits").read_text().splitlines() if l.startswith("Max open files"))
    return int(line.split()[3])


def test_the_daemon_raises_a_low_soft_limit_so_every_service_runs(platform: Platform) -> None:
    _many_quiet_services(platform)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    result = _svc_with_open_file_limit(platform, 200, hard, "up")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    states = {s["state"] for s in platform.status().values()}
    assert states == {"ready"}, states
    assert _daemon_limit(platform) >= 3 * SERVICES
    assert "open-file limit raised" in (platform.state_dir / "daemon.log").read_text()


def test_a_hard_limit_too_low_is_said_at_start_and_in_each_failure(platform: Platform) -> None:
    _many_quiet_services(platform)
    result = _svc_with_open_file_limit(platform, 200, 200, "up")
    assert result.returncode != 0
    log = (platform.state_dir / "daemon.log").read_text()
    assert f"{SERVICES} services need at least" in log and "the hard limit is 200" in log and "LimitNOFILE=" in log
    failed = [s for s in platform.status().values() if s["state"] == "failed"]
    assert failed, "no service failed under a hard limit of 200"
    assert all("open-file limit of 200" in s["reason"] and "LimitNOFILE=" in s["reason"] for s in failed), failed[0]
    assert any(s["state"] == "ready" for s in platform.status().values())  # the others run
