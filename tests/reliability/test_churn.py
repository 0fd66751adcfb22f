"""Churn: 100 services, random SIGKILLs for 30 seconds.

Every service comes back to ready, each one's restart counter equals the kills it
took, and the daemon's open descriptors and resident memory are the same afterwards
as before, within the tolerances below (measured with psutil on the daemon's pid).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections import Counter

import psutil
import pytest

from supervisord_lite.core import paths
from supervisord_lite.cli import transport
from tests.conftest import FAKES, free_ports, wait_until
from tests.integration.harness import Platform, port_accepts, wait_gone
from tests.reliability.conftest import Usage, daemon_usage

SERVICES = 100
CHURN_SECONDS = 30.0
FD_TOLERANCE = 3  # descriptors; measured: 0 difference
RSS_TOLERANCE = 16 * 2**20  # bytes; measured: a few MiB of allocator growth at most


def all_ready_with(platform: Platform, restarts: Counter[str] | None = None) -> bool:
    status = platform.status()
    if any(s["state"] != "ready" for s in status.values()):
        return False
    return restarts is None or all(s["restarts"] == restarts[n] for n, s in status.items())


def kill_if_ours(platform: Platform, name: str, pid: int, killed: set[tuple[int, float]]) -> bool:
    """SIGKILL ``pid`` only if it still is service ``name`` of this platform, and only once
    (a status read just after a kill may still show the dying process as ready)."""
    try:
        proc = psutil.Process(pid)
        key = (pid, proc.create_time())
        if key in killed or proc.cwd() != str(platform.root) or proc.environ().get("SVC_SERVICE") != name:
            return False
        proc.send_signal(signal.SIGKILL)
        killed.add(key)
        return True
    except psutil.Error:
        return False


def settled_usage(platform: Platform) -> Usage:
    """The daemon's usage once it is quiet: three samples in a row, half a second apart,
    agree on the descriptor count (probes and restarts open descriptors briefly)."""
    samples: list[Usage] = []

    def stable() -> Usage | None:
        samples.append(daemon_usage(platform))
        last = samples[-3:]
        return last[-1] if len(last) == 3 and len({u.fds for u in last}) == 1 else None

    return wait_until(stable, timeout=20, interval=0.5, what="the daemon's descriptors to settle")  # type: ignore[return-value]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_100_services_under_random_sigkills_for_30s_all_recover_and_nothing_leaks(platform: Platform) -> None:
    platform.supervisor["probe_interval"] = "1s"
    ports = free_ports(SERVICES)
    for i, port in enumerate(ports):
        platform.services[f"s{i:03d}"] = {
            "tier": "app", "port": port,
            "command": [sys.executable, "-S", str(FAKES / "listen_port.py"), str(port)],
            "backoff": {"first": "50ms", "max": "200ms"}, "start_limit": 10_000, "stop_timeout": "2s",
        }
    platform.write()
    t0 = time.monotonic()
    up = platform.svc("up", timeout=120)
    assert up.returncode == 0, up.stderr[-3000:]
    up_seconds = time.monotonic() - t0
    sock = paths.socket_path_for(platform.state_dir)
    rng = random.Random(2024)
    kills: Counter[str] = Counter()
    killed: set[tuple[int, float]] = set()

    def churn(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            snap = transport.call(sock, "status", {"usage": False}, timeout=10)
            ready = [(s["name"], s["pid"]) for s in snap["services"] if s["state"] == "ready" and s["pid"]]
            for name, pid in rng.sample(ready, min(len(ready), rng.randint(0, 3))):
                if kill_if_ours(platform, name, pid, killed):
                    kills[name] += 1

    # warm up (first restarts allocate what later ones reuse), then measure the baseline
    churn(2.0)
    wait_until(lambda: all_ready_with(platform, kills), timeout=60, interval=0.2, what="recovery after the warm-up")
    before = settled_usage(platform)

    churn(CHURN_SECONDS)
    total = sum(kills.values())
    wait_until(lambda: all_ready_with(platform), timeout=60, interval=0.2, what="every service back to ready")
    status = platform.status()
    wrong = {n: (s["restarts"], kills[n]) for n, s in status.items() if s["restarts"] != kills[n]}
    assert not wrong, f"restarts != kills for {wrong}"
    assert all(s["state"] == "ready" for s in status.values())
    assert all(port_accepts(p) for p in ports)
    after = settled_usage(platform)
    assert after.fds - before.fds <= FD_TOLERANCE, f"descriptors: before {before}, after {after}"
    assert after.rss - before.rss <= RSS_TOLERANCE, f"memory: before {before}, after {after}"
    print(f"\nchurn: {SERVICES} services up in {up_seconds:.1f}s; {total} SIGKILLs in {CHURN_SECONDS:.0f}s, "
          f"{len(kills)} services hit; daemon before: {before}; after: {after}")

    pids = [s["pid"] for s in status.values()]
    assert platform.svc("down", timeout=120).returncode == 0
    wait_gone(pids, timeout=10)
    assert not any(port_accepts(p) for p in ports)
    assert [p.pid for p in platform.our_processes()] == [platform.daemon_pid()]
    assert os.path.exists(platform.state_dir / "daemon.log")
