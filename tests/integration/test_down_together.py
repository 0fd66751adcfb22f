"""`svc down` of many services: every group of a tier is signalled at once, and the
guarantees of a one-by-one stop still hold for each service on its own.

Real processes (the demo stand-in), real signals: a tier of cooperative services with
stubborn ones among them (they ignore SIGTERM; one leaves an escaped, daemonized
grandchild), one paused with SIGSTOP, and an earlier tier that must stop after them.
"""

from __future__ import annotations

import json
import os
import re
import signal
from datetime import datetime, timezone

import psutil

from tests.conftest import wait_until
from tests.integration.harness import Platform, port_accepts

#: The stubborn services and their stop_timeout in seconds.
STUBBORN = {"slow1": 1.0, "slow3": 3.0}
#: How late a process may note a signal after it was sent (a loaded CI machine).
NOTE_SLACK = 0.5


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill_mark_time(platform: Platform, name: str) -> float:
    """When the service's log says its main process was killed by SIGKILL (unix time)."""
    text = (platform.state_dir / "logs" / f"{name}.log").read_text()
    stamps = re.findall(r"^(\S+) --- svc: pid \d+ killed by SIGKILL ---$", text, re.MULTILINE)
    assert stamps, f"{name}: no 'killed by SIGKILL' mark in its log:\n{text[-2000:]}"
    return datetime.strptime(stamps[-1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def test_down_of_many_stops_every_tree_each_after_its_own_timeout_tiers_in_reverse(platform: Platform) -> None:
    ports: dict[str, int] = {}
    for i in range(3):
        ports[f"db{i}"] = platform.add(f"db{i}", tier="infra", stop_timeout="30s")  # type: ignore[assignment]
    for i in range(24):
        ports[f"api{i:02d}"] = platform.add(f"api{i:02d}", stop_timeout="30s")  # type: ignore[assignment]
    for name, timeout in STUBBORN.items():
        ports[name] = platform.add(name, args="--ignore-sigterm --grandchild", stop_timeout=f"{timeout:g}s")  # type: ignore[assignment]
    ports["escaper"] = platform.add(  # type: ignore[assignment]
        "escaper", args="--ignore-sigterm --grandchild --daemonize-grandchild", stop_timeout="1s"
    )
    ports["paused"] = platform.add("paused", stop_timeout="60s")  # type: ignore[assignment]
    platform.write()
    result = platform.svc("up", timeout=120)
    assert result.returncode == 0, result.stderr

    status = platform.status()
    tree = {p.pid for p in platform.our_processes()} - {platform.daemon_pid()}
    assert len(tree) >= len(ports) + 4, "every main process, the stubborn ones' grandchildren and the escaped one"
    paused_pid = status["paused"]["pid"]
    os.killpg(paused_pid, signal.SIGSTOP)  # paused: it can act on SIGTERM only once continued
    wait_until(lambda: psutil.Process(paused_pid).status() == psutil.STATUS_STOPPED, what="the paused service to stop")

    result = platform.svc("down", timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"stopped {len(ports)} services" in result.stdout

    # every process of every tree is gone, and nothing listens on any service's port
    assert [pid for pid in sorted(tree) if _alive(pid)] == []
    assert [name for name, port in ports.items() if port_accepts(port)] == []

    # the paused one got SIGCONT after SIGTERM: it stopped by itself, long before its 60 s
    assert [r["signal"] for r in platform.events("stopping", "paused")] == ["SIGTERM"]
    assert "killed by SIGKILL" not in (platform.state_dir / "logs" / "paused.log").read_text()

    # each stubborn service was killed only after its own stop_timeout since its SIGTERM
    for name, timeout in {**STUBBORN, "escaper": 1.0}.items():
        noted = platform.events("sigterm_ignored", name)
        assert noted, f"{name} never got SIGTERM"
        assert _kill_mark_time(platform, name) >= noted[0]["time"] + timeout - NOTE_SLACK, name
    # and the cooperative ones exited on SIGTERM
    for i in range(24):
        assert [r["signal"] for r in platform.events("stopping", f"api{i:02d}")] == ["SIGTERM"], f"api{i:02d}"

    # reverse tier order: the infra tier is signalled only once every app service is gone
    app_done = max(_kill_mark_time(platform, name) for name in (*STUBBORN, "escaper"))
    infra_signalled = min(r["time"] for i in range(3) for r in platform.events("stopping", f"db{i}"))
    assert infra_signalled > app_done

    # the state file says nothing runs and nothing is wanted
    state = json.loads((platform.state_dir / "state.json").read_text())
    assert not state.get("processes") and not state.get("wanted"), state

