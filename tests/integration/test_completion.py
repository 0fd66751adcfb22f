"""`svc completion bash`, run for real: bash sources the script and calls its function,
which calls the installed `svc` entry point back, as it does when someone presses Tab."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SVC_BIN = Path(sys.executable).parent

MANIFEST = """\
[tiers.infra]
order = 0
[tiers.app]
order = 1
[tiers.web]
order = 2

[services.postgres]
tier = "infra"
command = "x"
groups = ["data"]

[services.payments-api]
tier = "app"
command = "x"
groups = ["backend", "payments"]

[services.app]
tier = "app"
command = "x"

[services.web]
tier = "web"
command = "x"
"""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def complete(words: list[str], cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """What bash offers for the last word of ``words`` (the word being typed)."""
    script = (
        'source <(svc completion bash) || exit 9\n'
        f'COMP_WORDS=({" ".join(_quote(w) for w in words)})\n'
        f"COMP_CWORD={len(words) - 1}\n"
        "_svc_completion svc\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    environment = {k: v for k, v in os.environ.items() if k != "SVC_MANIFEST"}
    environment["PATH"] = f"{SVC_BIN}{os.pathsep}{environment.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, cwd=cwd, env=environment | (env or {}), timeout=30
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def test_bash_completes_commands_options_and_names_from_the_manifest_found_above(tmp_path: Path) -> None:
    (tmp_path / "svc.toml").write_text(MANIFEST)
    below = tmp_path / "src" / "pkg"
    below.mkdir(parents=True)

    assert set(complete(["svc", "re"], below)) == {"restart", "reload"}
    assert "--with-dependents" in complete(["svc", "restart", "--"], below)

    names = set(complete(["svc", "up", ""], below))
    # "app" is a service and a tier of more: offered in the two spellings that are not ambiguous;
    # "web" is a tier that holds the service "web" alone: the one word means the same either way
    assert names == {"postgres", "payments-api", "service:app", "web", "infra", "tier:app", "@data", "@backend", "@payments"}
    assert set(complete(["svc", "status", "pa"], below)) == {"payments-api"}
    assert set(complete(["svc", "down", "@p"], below)) == {"@payments"}
    assert set(complete(["svc", "run", "--needs", "po"], below)) == {"postgres"}
    assert set(complete(["svc", "signal", "post"], below)) == {"postgres"}


def test_completion_follows_the_manifest_flag_and_is_silent_on_errors(tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[services.only-here]\ncommand = "x"\n')
    assert complete(["svc", "-f", str(other), "up", ""], tmp_path) == ["only-here"]
    assert complete(["svc", "up", "-f", str(other), "o"], tmp_path) == ["only-here"]

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "svc.toml").write_text("[services.half\n")
    assert complete(["svc", "up", ""], broken) == []
    nowhere = tmp_path / "empty"
    nowhere.mkdir()
    assert complete(["svc", "up", ""], nowhere, env={"SVC_MANIFEST": str(tmp_path / "missing.toml")}) == []


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_name_the_svc_command(shell: str) -> None:
    result = subprocess.run([str(SVC_BIN / "svc"), "completion", shell], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "_SVC_COMPLETE" in result.stdout and "svc" in result.stdout
