"""The systemd units under ``systemd-analyze verify``, with ExecStart pointing at the real `svc`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNITS = ROOT / "systemd"
INSTALLED_PATH = "/usr/local/bin/svc"


def svc_executable() -> str:
    found = Path(sys.executable).with_name("svc")  # the venv's console script
    if found.exists():
        return str(found)
    which = shutil.which("svc")
    assert which, "the `svc` console script is not installed (pip install -e .)"
    return which


def settings(unit: str) -> dict[str, list[str]]:
    """Key -> values of a unit file, comments and sections ignored."""
    out: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def verify(unit_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=unit_file.parent,
    )


@pytest.mark.parametrize(
    ("unit", "instance"), [("svc.service", "svc.service"), ("svc@.service", "svc@home-me-src-platform-svc.toml.service")]
)
def test_unit_is_clean_under_systemd_analyze_verify(unit: str, instance: str, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    text = (UNITS / unit).read_text()
    assert INSTALLED_PATH in text
    # A template is verified as an instance (the file name carries the escaped manifest path).
    target = tmp_path / instance
    target.write_text(text.replace(INSTALLED_PATH, svc_executable()))
    result = verify(target)
    # Unknown keys and bad values are only warnings (exit 0): any output is a failure.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr + result.stdout


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: a typo and a missing binary are reported."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    broken = tmp_path / "broken.service"
    broken.write_text((UNITS / "svc.service").read_text().replace("KillMode=mixed", "KillMode=mixd"))
    assert "kill mode" in verify(broken).stderr
    missing = tmp_path / "missing.service"
    missing.write_text((UNITS / "svc.service").read_text())  # /usr/local/bin/svc does not exist here
    if not Path(INSTALLED_PATH).exists():
        result = verify(missing)
        assert result.returncode != 0 and "is not executable" in result.stderr


@pytest.mark.parametrize("unit", ["svc.service", "svc@.service"])
def test_unit_settings(unit: str) -> None:
    s = settings(unit)
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["30"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["KillMode"] == ["mixed"]  # SIGTERM to the daemon only: it stops services in order
    assert s["Restart"] == ["on-failure"]
    assert int(s["TimeoutStopSec"][0]) >= 60
    (exec_start,) = s["ExecStart"]
    assert exec_start.startswith(f"{INSTALLED_PATH} daemon -f ")
    assert exec_start.endswith("%f" if "@" in unit else "%E/svc/svc.toml")
