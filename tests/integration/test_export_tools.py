"""``svc export`` through the real entry point, its output checked by the engines' own tools:
``docker-compose config`` (no engine needed), ``kubernetes-validate`` (offline schemas) and
``systemd-analyze verify``.

A missing tool skips its tests on a developer machine; under CI (env CI set) it fails.
CI installs them: Debian packages docker-compose and systemd, and kubernetes-validate
from the test extra.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from supervisord_lite.core.manifest import load_manifest
from tests.conftest import ROOT

SVC = [sys.executable, "-m", "supervisord_lite"]
CONFIGS = [ROOT / "config" / "bizosaas.toml", ROOT / "config" / "demo.toml"]
K8S_VERSION = "1.30.0"  # a schema set kubernetes-validate ships; widely deployed


def need(tool: str, found: bool) -> None:
    if found:
        return
    message = f"{tool} is not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI must run this test")
    pytest.skip(message)


def compose_tool() -> list[str]:
    """``docker-compose`` (Debian package docker-compose), else the ``docker compose`` plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    need("docker-compose", False)
    raise AssertionError("unreachable")


def kubernetes_validate() -> list[str]:
    script = Path(sys.executable).with_name("kubernetes-validate")
    need("kubernetes-validate (pip install -e '.[test]')", script.exists())
    return [str(script)]


def systemd_analyze() -> list[str]:
    need("systemd-analyze (Debian package systemd)", shutil.which("systemd-analyze") is not None)
    return ["systemd-analyze"]


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False)


def export(
    manifest: Path, target: str, out: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "SVC_MANIFEST"} | (env or {})
    return run([*SVC, "export", "-f", str(manifest), "--to", target, "-o", str(out), *extra], ROOT, environment)


def exported(manifest: Path, target: str, out: Path, *extra: str, env: dict[str, str] | None = None) -> list[Path]:
    result = export(manifest, target, out, *extra, env=env)
    assert result.returncode == 0, result.stderr
    return sorted(out.iterdir())


# --------------------------------------------------------------------------- the checks


def check_compose(out: Path) -> dict[str, object]:
    result = run([*compose_tool(), "config"], out)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def check_kubernetes(out: Path) -> None:
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    resources = sorted(p.name for p in out.iterdir() if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == resources
    result = run([*kubernetes_validate(), "--strict", "-k", K8S_VERSION, *resources], out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout and "WARN" not in result.stdout, result.stdout


def check_systemd(out: Path) -> None:
    result = run([*systemd_analyze(), "verify", "--man=no", *sorted(p.name for p in out.iterdir())], out)
    # bad values and unknown keys are only warnings (exit 0): any output is a failure
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr + result.stdout


def stub_programs(manifest: Path, bin_dir: Path) -> dict[str, str]:
    """The environment of a machine where the services' programs are installed: a stub for
    every program of the manifest that this machine lacks, first on PATH."""
    bin_dir.mkdir()
    for spec in load_manifest(manifest).active():
        program = spec.command[0]
        if "/" not in program and shutil.which(program) is None:
            stub = bin_dir / program
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("manifest", CONFIGS, ids=lambda p: p.name)
def test_shipped_manifests_export_cleanly_to_compose(manifest: Path, tmp_path: Path) -> None:
    exported(manifest, "compose", tmp_path)
    config = check_compose(tmp_path)
    active = {s.name for s in load_manifest(manifest).active()}
    assert set(config["services"]) == active  # type: ignore[call-overload]


@pytest.mark.parametrize("manifest", CONFIGS, ids=lambda p: p.name)
def test_shipped_manifests_export_cleanly_to_kubernetes(manifest: Path, tmp_path: Path) -> None:
    exported(manifest, "kubernetes", tmp_path)
    check_kubernetes(tmp_path)


@pytest.mark.parametrize("manifest", CONFIGS, ids=lambda p: p.name)
def test_shipped_manifests_export_cleanly_to_systemd(manifest: Path, tmp_path: Path) -> None:
    env = stub_programs(manifest, tmp_path / "bin")
    files = exported(manifest, "systemd", tmp_path / "units", env=env)
    m = load_manifest(manifest)
    assert len([f for f in files if f.suffix == ".service"]) == len(m.active())
    assert len([f for f in files if f.suffix == ".target"]) == len(m.tiers) + 1
    check_systemd(tmp_path / "units")


# --------------------------------------------------------------------------- everything at once

EVERYTHING = """\
[supervisor]
name = "lab"

[export]
image = "example/{name}:1"
env = { BIND = "0.0.0.0" }

[tiers.data]
order = 0
ports = ["15000-15999"]
[tiers.apps]
order = 1
ports = ["18000-18999"]

[services.db]
tier = "data"
port = 15432
command = "/bin/sleep 1000"
ready = { exec = "pg_isready -p {port}" }
stop_signal = "SIGINT"
stop_timeout = "1m30s"
export = { image = "postgres:16", command = [] }

[services.migrate]
tier = "apps"
kind = "oneshot"
command = ["/bin/sh", "-c", "echo $HOME 100% done; exit 0"]
depends_on = ["db"]
env = { QUOTE = 'say "hi"', MULTI = "a\\nb" }

[services.api]
tier = "apps"
port = 18000
command = ["/bin/echo", "--port", "{port}", ";", "a b", "'single'"]
ready = { http = "/health?full=1", timeout = "500ms" }
health = { tcp = true }
probe_interval = "1500ms"
depends_on = ["migrate", "db"]
restart = "always"
env_file = "api.env"
export = { build = "api", image = "example/api:2" }

[services.worker]
tier = "apps"
command = "/bin/true"
ready = { after = "1s" }
restart = "no"

[services.old]
tier = "apps"
port = 18001
command = "/bin/true"
status = "deprecated"
replaced_by = "api"
"""


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """A manifest using every exported setting, with its build context and env file."""
    folder = tmp_path / "lab"
    (folder / "api").mkdir(parents=True)
    (folder / "api.env").write_text("TOKEN=x\n")
    manifest = folder / "svc.toml"
    manifest.write_text(EVERYTHING)
    return manifest


def test_every_setting_passes_docker_compose_config(lab: Path, tmp_path: Path) -> None:
    out = tmp_path / "compose"
    exported(lab, "compose", out)
    config = check_compose(out)
    services = config["services"]  # type: ignore[index]
    assert list(sorted(services)) == ["api", "db", "migrate", "worker"]
    assert services["api"]["build"]["context"] == str(lab.parent / "api")
    assert services["api"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["worker"]["depends_on"]["db"] == {"condition": "service_healthy"}  # the data tier first
    # Compose's own reading of the escaped values: it prints them escaped again ($$)
    assert services["migrate"]["command"][2] == "echo $$HOME 100% done; exit 0"


def test_every_setting_passes_kubernetes_validate(lab: Path, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    files = [p.name for p in exported(lab, "kubernetes", out)]
    assert files == ["api.yaml", "db.yaml", "kustomization.yaml", "worker.yaml"]
    check_kubernetes(out)


def test_every_setting_passes_systemd_analyze_verify(lab: Path, tmp_path: Path) -> None:
    out = tmp_path / "units"
    exported(lab, "systemd", out)
    check_systemd(out)


def test_the_checks_are_not_vacuous(lab: Path, tmp_path: Path) -> None:
    """Each tool rejects a broken version of what we export."""
    exported(lab, "compose", tmp_path / "c")
    broken = tmp_path / "c" / "compose.yaml"
    broken.write_text(broken.read_text().replace("    healthcheck:", "    healthchek:", 1))
    result = run([*compose_tool(), "config"], tmp_path / "c")
    assert result.returncode != 0 and "healthchek" in result.stderr

    exported(lab, "kubernetes", tmp_path / "k")
    api = tmp_path / "k" / "api.yaml"
    api.write_text(api.read_text().replace("periodSeconds: 2", "periodSeconds: often"))
    result = run([*kubernetes_validate(), "--strict", "-k", K8S_VERSION, "api.yaml"], tmp_path / "k")
    assert result.returncode != 0, result.stdout

    exported(lab, "systemd", tmp_path / "s")
    unit = tmp_path / "s" / "lab-api.service"
    unit.write_text(unit.read_text().replace("Restart=always", "Restart=sometimes"))
    result = run([*systemd_analyze(), "verify", "--man=no", "lab-api.service"], tmp_path / "s")
    assert "sometimes" in result.stderr


# --------------------------------------------------------------------------- refusals and comments


def test_an_invalid_manifest_is_refused_with_the_messages_of_svc_check(tmp_path: Path) -> None:
    manifest = tmp_path / "svc.toml"
    manifest.write_text(
        textwrap.dedent(
            """\
            [services.a]
            command = "a"
            port = 5000
            [services.b]
            command = "b"
            port = 5000
            depends_on = ["c"]
            """
        )
    )
    check = run([*SVC, "check", "-f", str(manifest)], tmp_path)
    result = export(manifest, "compose", tmp_path / "out")
    assert check.returncode == 2 and result.returncode == 2
    problems = [line for line in check.stdout.splitlines() if ": error: " in line]
    assert len(problems) == 2 and "port 5000 is already taken by a" in problems[0]
    assert result.stderr.splitlines()[: len(problems)] == problems
    assert not (tmp_path / "out").exists()


def test_services_without_an_image_are_listed_and_nothing_is_written(tmp_path: Path) -> None:
    manifest = tmp_path / "svc.toml"
    manifest.write_text(
        '[services.a]\ncommand = "a"\n'
        '[services.b]\ncommand = "b"\nexport = { image = "x" }\n'
        '[services.c]\ncommand = "c"\n'
    )
    result = export(manifest, "compose", tmp_path / "out")
    assert result.returncode == 2
    assert f"{manifest}: error: services.a.export: no image and no build context" in result.stderr
    assert f"{manifest}: error: services.c.export: no image and no build context" in result.stderr
    assert "services.b" not in result.stderr
    assert "svc: nothing exported to compose (2 problems)" in result.stderr
    assert not (tmp_path / "out").exists()

    files = exported(manifest, "compose", tmp_path / "out", "--allow-missing-images")
    text = files[0].read_text()
    assert "# Left out: a (no image or build context), c (no image or build context)." in text
    assert set(check_compose(tmp_path / "out")["services"]) == {"b"}  # type: ignore[call-overload]


def test_a_new_export_removes_the_files_of_dropped_services_only(lab: Path, tmp_path: Path) -> None:
    out = tmp_path / "units"
    exported(lab, "systemd", out)
    mine = out / "README.txt"
    mine.write_text("notes of my own\n")
    worker = '[services.worker]\ntier = "apps"'
    lab.write_text(lab.read_text().replace(worker, worker + '\nstatus = "disabled"'))
    result = export(lab, "systemd", out)
    assert result.returncode == 0, result.stderr
    assert f"removed {out / 'lab-worker.service'} (left from an earlier export)" in result.stdout
    assert not (out / "lab-worker.service").exists()
    assert mine.read_text() == "notes of my own\n"
    assert "# Left out: worker (disabled), old (deprecated, replaced by api)." in (out / "lab.target").read_text()
