"""core.instances: the offset rule, what moves with it, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisord_lite.core.instances import (
    InstanceError,
    apply_instance,
    instance_step,
    requested_instance,
    shift_manifest,
)
from supervisord_lite.core.machine import claim_of, overlaps
from supervisord_lite.core.manifest import load_manifest, parse_manifest
from supervisord_lite.core.problems import ManifestError

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo.toml"

SMALL = """
[supervisor]
name = "small"
state_dir = ".svc"
metrics = "127.0.0.1:41090"

[tiers.app]
order = 0
ports = ["41000-41049"]

[services.db]
tier = "app"
port = 41000
command = "db --port {port}"

[services.api]
tier = "app"
port = 41001
command = "api --port {port} --db 41000"
url = "http://localhost:{port}/"
env = { DB_URL = "postgres://localhost:41000/x", STATE = "{state_dir}/api", OTHER = "41000x 141000 4100" }
ready = { exec = ["probe", "localhost:41000"] }
"""


def small(tmp_path: Path) -> object:
    return parse_manifest(SMALL, tmp_path / "svc.toml")


def test_step_is_the_smallest_hundred_that_keeps_instances_apart(tmp_path: Path) -> None:
    m = small(tmp_path)
    # claims 41000-41049 and 41090: 100 keeps every instance apart
    assert instance_step(m) == 100
    demo = load_manifest(DEMO)
    step = instance_step(demo)
    assert step % 100 == 0
    base = claim_of(demo, None)
    for n in range(1, 4):
        moved = claim_of(shift_manifest(demo, n), None)
        assert overlaps(moved, base) == [] and overlaps(base, moved) == []
        if n > 1:
            assert overlaps(moved, claim_of(shift_manifest(demo, n - 1), None)) == []
    smaller = step - 100
    # one step of 100 less would put some instance on instance 0's claims (the rule is the smallest)
    spans = [(r.start, r.end) for t in demo.tiers.values() for r in t.ports] + [(9108, 9108)]
    assert any(
        a + k * smaller <= d and c <= b + k * smaller
        for k in range(1, 65535 // smaller + 1)
        for a, b in spans
        for c, d in spans
    )


def test_every_port_range_metrics_state_dir_and_reference_moves(tmp_path: Path) -> None:
    m = small(tmp_path)
    two = shift_manifest(m, 2)
    assert two.supervisor.instance == 2
    assert two.supervisor.metrics == "127.0.0.1:41290"
    assert two.supervisor.state_dir == tmp_path / ".svc-2"
    assert [str(r) for r in two.tiers["app"].ports] == ["41200-41249"]
    api = two.services["api"]
    assert two.services["db"].port == 41200 and api.port == 41201
    assert api.command == ("api", "--port", "41201", "--db", "41200")
    assert api.url == "http://localhost:41201/"
    assert api.env["DB_URL"] == "postgres://localhost:41200/x"
    assert api.env["STATE"] == f"{tmp_path / '.svc-2'}/api"
    assert api.env["OTHER"] == "41200x 141000 4100"  # only whole numbers that are declared ports move
    assert api.ready.exec == ("probe", "localhost:41200")
    assert shift_manifest(m, 0) is m


def test_a_shift_past_the_port_space_is_refused_with_the_key(tmp_path: Path) -> None:
    demo = load_manifest(DEMO)
    step = instance_step(demo)
    top = max([r.end for tier in demo.tiers.values() for r in tier.ports] + [s.port for s in demo.services.values() if s.port])
    last_fitting = (65535 - top) // step
    shift_manifest(demo, last_fitting)
    with pytest.raises(InstanceError, match=r"tiers\.\w+\.ports .* past 65535"):
        shift_manifest(demo, last_fitting + 1)
    with pytest.raises(ManifestError) as caught:
        apply_instance(demo, {"SVC_INSTANCE_NUMBER": str(last_fitting + 1)})
    assert caught.value.problems[0].key == "supervisor.instance"
    assert caught.value.problems[0].file == str(demo.path)


def test_instance_comes_from_the_environment_before_the_manifest() -> None:
    assert requested_instance({}, 3) == 3
    assert requested_instance({"SVC_INSTANCE_NUMBER": "2"}, 3) == 2
    assert requested_instance({"SVC_INSTANCE_NUMBER": " "}, 1) == 1
    for bad in ("-1", "x", "651", "1.5"):
        with pytest.raises(InstanceError, match="SVC_INSTANCE_NUMBER"):
            requested_instance({"SVC_INSTANCE_NUMBER": bad})


def test_supervisor_instance_key_is_read_and_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SVC_INSTANCE_NUMBER", raising=False)
    path = tmp_path / "svc.toml"
    path.write_text(SMALL.replace('name = "small"', 'name = "small"\ninstance = 1'))
    m = load_manifest(path)
    assert m.supervisor.instance == 1 and m.services["db"].port == 41100
    monkeypatch.setenv("SVC_INSTANCE_NUMBER", "0")
    assert load_manifest(path).services["db"].port == 41000


def test_a_manifest_without_ports_only_changes_state_dir(tmp_path: Path) -> None:
    m = parse_manifest('[supervisor]\nmetrics = ""\n[services.a]\ncommand = "true"\n', tmp_path / "svc.toml")
    assert instance_step(m) == 0
    one = shift_manifest(m, 1)
    assert one.supervisor.state_dir == tmp_path / ".svc-1"
