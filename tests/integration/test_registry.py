"""The per-user port registry, with the real `svc` CLI and real daemons: warnings across
projects, conflicts naming the other project, svc who, svc ports --all, svc ls, many
writers at once, pruning and a corrupt file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from supervisord_lite.core.model import Manifest

from tests.conftest import ports_kept_from_outgoing_connections, wait_until
from tests.integration.harness import SVC, Platform

ROOT = Path(__file__).resolve().parents[2]


def _line_of(path: Path, needle: str, after: str = "") -> int:
    """The 1-based line of the first ``needle`` after the line containing ``after``."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    return next(i for i, line in enumerate(lines) if i >= start and needle in line) + 1


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Platform, Platform]]:
    a_root, b_root = tmp_path / "alpha", tmp_path / "beta"
    a_root.mkdir()
    b_root.mkdir()
    a, b = Platform(a_root), Platform(b_root)
    a.supervisor["name"] = "alpha"
    b.supervisor["name"] = "beta"
    try:
        yield a, b
    finally:
        a.cleanup()
        b.cleanup()


def _registry(path: Path) -> dict:
    return json.loads(path.read_text())


def test_overlapping_ranges_warn_naming_both_sides(two: tuple[Platform, Platform]) -> None:
    a, b = two
    # the services sit in a tier without ranges (any port): the test is about the ranges alone
    a.tiers = {"app": {"order": 0, "ports": ["41000-41099"]}, "web": {"order": 1}}
    b.tiers = {"app": {"order": 0, "ports": ["41050-41149"]}, "web": {"order": 1}}
    a.add("api", tier="web")
    b.add("web", tier="web")
    a.write()
    b.write()
    first = a.svc("check")
    assert "41050" not in first.stdout  # beta not registered yet: nothing to warn about
    second = b.svc("check")
    a_line = _line_of(a.manifest, "ports", "[tiers.app]")
    b_line = _line_of(b.manifest, "ports", "[tiers.app]")
    assert f"{b.manifest}:{b_line}" in second.stdout, second.stdout
    assert f"alpha ({a.manifest}) at {a.manifest}:{a_line}" in second.stdout, second.stdout
    again = a.svc("check")
    assert f"{a.manifest}:{a_line}" in again.stdout and f"beta ({b.manifest}) at {b.manifest}:{b_line}" in again.stdout
    assert again.returncode == 0  # a warning
    strict = a.svc("check", "--strict")
    assert strict.returncode == 1, strict.stdout


def test_port_of_another_projects_daemon_is_a_named_conflict(two: tuple[Platform, Platform]) -> None:
    a, b = two
    a.tiers = b.tiers = {"app": {"order": 0}}
    port = a.add("api", ready={"tcp": True})
    b.add("thief", port=port, ready={"tcp": True})
    a.write()
    b.write()
    a.svc("up", check=True)
    b.svc("up", "--no-wait", check=True)
    state = b.wait_state("thief", "conflict")
    assert "service api of project alpha" in state["reason"], state
    assert str(a.manifest) in state["reason"]

    who = subprocess.run([*SVC, "who", str(port)], capture_output=True, text=True, cwd=b.root.parent, timeout=60)
    assert who.returncode == 0, who.stderr
    assert f"owner:    service api of project alpha ({a.manifest})" in who.stdout, who.stdout

    entries = {e["name"]: e for e in _registry(Path(os.environ["SVC_REGISTRY"]))["entries"]}
    assert entries["alpha"]["daemon_pid"] == a.daemon_pid()
    a.svc("shutdown", check=True)
    wait_until(lambda: {e["name"]: e for e in _registry(Path(os.environ["SVC_REGISTRY"]))["entries"]}["alpha"]["daemon_pid"] is None,
               what="the registry to forget alpha's daemon")


_WRITER = """
import sys
from pathlib import Path
from supervisord_lite.core.manifest import load_manifest
from supervisord_lite.host import registry
registry.record(load_manifest(Path(sys.argv[1])))
"""


def test_twenty_concurrent_writers_leave_every_entry(tmp_path: Path) -> None:
    paths = []
    for i in range(20):
        m = tmp_path / f"p{i}" / "svc.toml"
        m.parent.mkdir()
        m.write_text(f'[supervisor]\nname = "p{i}"\nmetrics = ""\n[services.s]\ncommand = "true"\nport = {42000 + i}\n')
        paths.append(m)
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(m)], stderr=subprocess.PIPE, text=True) for m in paths]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    reg = Path(os.environ["SVC_REGISTRY"])
    doc = _registry(reg)
    assert sorted(e["name"] for e in doc["entries"]) == sorted(f"p{i}" for i in range(20))
    assert oct(reg.stat().st_mode & 0o777) == "0o600"
    assert oct(reg.parent.stat().st_mode & 0o777) == "0o700"


def test_deleted_manifest_is_pruned(two: tuple[Platform, Platform]) -> None:
    a, b = two
    a.add("api")
    b.add("web")
    a.write()
    b.write()
    a.svc("check", check=True)
    b.svc("check", check=True)
    reg = Path(os.environ["SVC_REGISTRY"])
    assert {e["name"] for e in _registry(reg)["entries"]} == {"alpha", "beta"}
    b.manifest.unlink()
    listing = subprocess.run([*SVC, "ls", "--json"], capture_output=True, text=True, timeout=60, check=True)
    assert [p["name"] for p in json.loads(listing.stdout)] == ["alpha"]
    assert {e["name"] for e in _registry(reg)["entries"]} == {"alpha"}


def test_corrupt_registry_is_reported_and_rebuilt(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    reg = Path(os.environ["SVC_REGISTRY"])
    reg.parent.mkdir(parents=True, exist_ok=True)
    reg.write_text('{"version": 1, "entries": [{"manifest": 3')
    result = platform.svc("check")
    assert result.returncode == 0, result.stderr
    complaints = [line for line in result.stderr.splitlines() if "registry" in line]
    assert len(complaints) == 1 and str(reg) in complaints[0] and "corrupt" in complaints[0], result.stderr
    assert [e["name"] for e in _registry(reg)["entries"]] == ["test"]


def test_ports_all_lists_every_project_with_live_state_and_overlaps(two: tuple[Platform, Platform]) -> None:
    a, b = two
    a.tiers = b.tiers = {"app": {"order": 0}}
    port = a.add("api", ready={"tcp": True})
    b.add("web", port=port)
    a.write()
    b.write()
    a.svc("up", check=True)
    b.svc("check")
    doc = json.loads(a.svc("ports", "--all", "--format", "json", check=True).stdout)
    projects = {p["name"]: p for p in doc["projects"]}
    assert set(projects) == {"alpha", "beta"}
    api = next(s for s in projects["alpha"]["ports"] if s["service"] == "api")
    assert api["listening"] is True and api["port"] == port
    assert projects["alpha"]["daemon_running"] is True
    assert any(str(port) in o for o in projects["beta"]["overlaps"]), projects["beta"]
    text = a.svc("ports", "--all", check=True).stdout
    assert "alpha" in text and "beta" in text and "overlap" in text.lower()


def _svc(manifest: Path, *args: str, instance: int, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SVC, *args[:1], "-f", str(manifest), *args[1:]],
        capture_output=True, text=True, timeout=timeout, cwd=manifest.parent, stdin=subprocess.DEVNULL,
        env={**os.environ, "SVC_INSTANCE_NUMBER": str(instance)},
    )  # fmt: skip


def test_two_instances_of_the_demo_run_side_by_side(tmp_path: Path) -> None:
    """Instances 1 and 2 of a copy of config/demo.toml (instance 0 is left to whoever runs
    the demo on this machine): every service of both ready, no conflict, two metrics endpoints."""
    from supervisord_lite.core.instances import shift_manifest
    from supervisord_lite.core.manifest import load_manifest

    demo = ROOT / "config" / "demo.toml"
    manifest = tmp_path / "demo.toml"
    manifest.write_text(demo.read_text())
    base = load_manifest(manifest)
    wanted = set()
    for n in (1, 2):
        m = shift_manifest(base, n)
        wanted |= {s.port for s in m.services.values() if s.port is not None}
        wanted.add(m.supervisor.metrics_address[1])  # type: ignore[index]
    # The demo's ports are fixed, and from instance 1 on lie in Linux's ephemeral range
    # (32768-60999): kept from outgoing connections while both instances come up.
    with ports_kept_from_outgoing_connections(wanted, wait=65) as taken:
        if taken:
            pytest.skip(f"ports of demo instances 1 and 2 are in use on this machine: {sorted(taken)}")
        _run_two_demo_instances(manifest, base)


def _run_two_demo_instances(manifest: Path, base: Manifest) -> None:
    import urllib.request

    from supervisord_lite.core.instances import shift_manifest

    try:
        for n in (1, 2):
            result = _svc(manifest, "up", "--timeout", "90", instance=n)
            assert result.returncode == 0, result.stdout + result.stderr
        for n in (1, 2):
            status = json.loads(_svc(manifest, "status", "--json", instance=n).stdout)
            states = {s["name"]: s["state"] for s in status["services"] if s["name"] != "super-admin"}
            assert set(states.values()) == {"ready"}, states
            m = shift_manifest(base, n)
            host, port = m.supervisor.metrics_address  # type: ignore[misc]
            body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
            assert 'service="fastapi-hub"' in body
        listing = json.loads(subprocess.run([*SVC, "ls", "--json"], capture_output=True, text=True, timeout=60, check=True).stdout)
        assert sorted(r["instance"] for r in listing if r["manifest"] == str(manifest)) == [1, 2]
        assert all(r["daemon_running"] for r in listing if r["manifest"] == str(manifest))
        guide = json.loads(subprocess.run([*SVC, "ports", "--all", "--format", "json"], capture_output=True, text=True,
                                          timeout=60, check=True).stdout)  # fmt: skip
        assert all(p["overlaps"] == [] for p in guide["projects"]), guide
    finally:
        for n in (1, 2):
            _svc(manifest, "shutdown", "--timeout", "30", instance=n)
