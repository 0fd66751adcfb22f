"""The ``pid_file`` key: where a program that daemonizes writes its pid."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisord_lite.core.manifest import parse_manifest
from supervisord_lite.core.problems import ManifestError
from supervisord_lite.core.serialise import manifest_to_dict


def test_pid_file_is_resolved_against_the_manifest_folder_with_placeholders(tmp_path: Path) -> None:
    text = """
[supervisor]
state_dir = "run"

[services.cache]
command = "redis-server --daemonize yes --pidfile {state_dir}/cache.pid"
port = 6379
pid_file = "{state_dir}/{name}.pid"

[services.web]
command = "web"
"""
    m = parse_manifest(text, tmp_path / "svc.toml")
    assert m.services["cache"].pid_file == tmp_path / "run" / "cache.pid"
    assert m.services["web"].pid_file is None
    shown = manifest_to_dict(m)["services"]
    assert shown["cache"]["pid_file"] == str(tmp_path / "run" / "cache.pid") and "pid_file" not in shown["web"]


def test_pid_file_must_be_a_string(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="pid_file"):
        parse_manifest('[services.cache]\ncommand = "x"\npid_file = 3\n', tmp_path / "svc.toml")
