"""Ports inside the machine's ephemeral range: `svc check` warns, naming tier and service."""

from __future__ import annotations

from pathlib import Path

from supervisord_lite.core.manifest import parse_manifest
from supervisord_lite.host.portinfo import ephemeral_range, ephemeral_warnings

TEXT = (
    '[tiers.infra]\norder = 0\nports = ["20000-20999"]\n'
    '[tiers.app]\norder = 1\nports = ["30000-33999"]\n'
    '[services.db]\ntier = "infra"\nport = 20001\ncommand = "x"\n'
    '[services.api]\ntier = "app"\nport = 33000\ncommand = "x"\n'
)


def test_a_tier_range_and_a_port_inside_the_ephemeral_range_are_named() -> None:
    manifest = parse_manifest(TEXT, Path("/srv/svc.toml"))
    found = {(p.service, p.key): p.message for p in ephemeral_warnings(manifest, (32768, 60999))}
    assert set(found) == {(None, "tiers.app.ports"), ("api", "port")}
    assert "30000-33999 overlaps this machine's ephemeral port range 32768-60999" in found[(None, "tiers.app.ports")]
    assert "move it below 32768" in found[(None, "tiers.app.ports")]


def test_nothing_inside_the_range_is_nothing_to_say() -> None:
    manifest = parse_manifest(TEXT, Path("/srv/svc.toml"))
    assert ephemeral_warnings(manifest, (40000, 60999)) == []


def test_the_range_is_read_from_the_kernel_and_a_bad_file_is_no_range(tmp_path: Path) -> None:
    low, high = ephemeral_range() or (1, 0)
    assert 0 < low <= high <= 65535
    bad = tmp_path / "range"
    bad.write_text("nonsense\n")
    assert ephemeral_range(str(bad)) is None
    assert ephemeral_range(str(tmp_path / "missing")) is None
