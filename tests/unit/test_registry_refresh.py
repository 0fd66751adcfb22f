"""The registry is written only when something in it changes: `svc up` and `svc check` of
an unchanged platform leave the file alone, and still prune, clear and rebuild it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from supervisord_lite.core.manifest import load_manifest
from supervisord_lite.core.model import Manifest
from supervisord_lite.host import registry


def _platform(folder: Path, name: str, port: int) -> Manifest:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "svc.toml"
    path.write_text(f'[supervisor]\nname = "{name}"\nmetrics = ""\n[services.api]\ncommand = "true"\nport = {port}\n')
    return load_manifest(path)


def _entries(reg: Path) -> list[dict]:
    return json.loads(reg.read_text())["entries"]


def _written_since(reg: Path, before: os.stat_result) -> bool:
    """Every write replaces the file (temp file, then rename): a new inode."""
    return reg.stat().st_ino != before.st_ino


def test_refresh_of_an_unchanged_claim_leaves_the_file_alone(tmp_path: Path, private_registry: Path) -> None:
    a = _platform(tmp_path / "a", "alpha", 42100)
    b = _platform(tmp_path / "b", "beta", 42101)
    registry.record(a)
    registry.record(b)
    before = private_registry.stat()
    registry.refresh(a)
    others = registry.record(a)
    assert not _written_since(private_registry, before)
    assert [c.name for c in others] == ["beta"]


def test_refresh_writes_a_changed_manifest(tmp_path: Path, private_registry: Path) -> None:
    a = _platform(tmp_path / "a", "alpha", 42100)
    registry.record(a)
    before = private_registry.stat()
    registry.refresh(_platform(tmp_path / "a", "alpha", 42102))
    assert _written_since(private_registry, before)
    assert [p["port"] for p in _entries(private_registry)[0]["ports"]] == [42102]


def test_refresh_prunes_a_deleted_manifest(tmp_path: Path, private_registry: Path) -> None:
    a = _platform(tmp_path / "a", "alpha", 42100)
    b = _platform(tmp_path / "b", "beta", 42101)
    registry.record(a)
    registry.record(b)
    b.path.unlink()
    registry.refresh(a)
    assert [e["name"] for e in _entries(private_registry)] == ["alpha"]


def test_refresh_clears_the_pid_of_a_daemon_that_is_gone(tmp_path: Path, private_registry: Path) -> None:
    a = _platform(tmp_path / "a", "alpha", 42100)
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=30)
    registry.record(a, daemon_pid=gone.pid)
    assert _entries(private_registry)[0]["daemon_pid"] == gone.pid
    registry.refresh(a)
    assert _entries(private_registry)[0]["daemon_pid"] is None


def test_refresh_keeps_the_pid_of_a_live_daemon_without_writing(tmp_path: Path, private_registry: Path) -> None:
    a = _platform(tmp_path / "a", "alpha", 42100)
    registry.record(a, daemon_pid=os.getpid())
    before = private_registry.stat()
    registry.refresh(a)
    assert not _written_since(private_registry, before)
    assert _entries(private_registry)[0]["daemon_pid"] == os.getpid()


def test_record_of_an_unchanged_claim_still_reports_a_malformed_entry(
    tmp_path: Path, private_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _platform(tmp_path / "a", "alpha", 42100)
    b = _platform(tmp_path / "b", "beta", 42101)
    registry.record(a)
    registry.record(b)
    doc = json.loads(private_registry.read_text())
    doc["entries"][1]["ports"] = "not a list"
    private_registry.write_text(json.dumps(doc))
    assert registry.record(a) == []
    err = capsys.readouterr().err
    assert "corrupt" in err and str(private_registry) in err
    assert [e["name"] for e in _entries(private_registry)] == ["alpha"]


def test_a_daemon_records_its_pid_carrying_the_other_entries_over(tmp_path: Path, private_registry: Path) -> None:
    a = _platform(tmp_path / "a", "alpha", 42100)
    b = _platform(tmp_path / "b", "beta", 42101)
    c = _platform(tmp_path / "c", "gamma", 42102)
    registry.record(a)
    registry.record(b)
    registry.record(c)
    beta = next(e for e in _entries(private_registry) if e["name"] == "beta")
    c.path.unlink()
    with registry.daemon_registered(a):
        entries = {e["name"]: e for e in _entries(private_registry)}
        assert set(entries) == {"alpha", "beta"}
        assert entries["alpha"]["daemon_pid"] == os.getpid()
        assert entries["beta"] == beta
    assert {e["name"]: e["daemon_pid"] for e in _entries(private_registry)} == {"alpha": None, "beta": None}


def test_a_daemon_rebuilds_a_registry_that_is_not_json(
    tmp_path: Path, private_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _platform(tmp_path / "a", "alpha", 42100)
    private_registry.write_text('{"version": 1, "entries": [{"manifest": 3')
    with registry.daemon_registered(a):
        assert [(e["name"], e["daemon_pid"]) for e in _entries(private_registry)] == [("alpha", os.getpid())]
    err = capsys.readouterr().err
    assert "corrupt" in err and str(private_registry) in err
