"""Environment and overrides through the real ``svc``: ${VAR} from .env, a reference to
another service's port, svc.local.toml, -f A -f B (up, reload), check, config --origin."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from tests.conftest import free_ports, wait_until
from tests.integration.harness import Platform

SHOW = ["sh", "-c", "echo URL=$DATABASE_URL GREETING=$GREETING EXTRA=$EXTRA UNUSED=$UNUSED."]


def _platform_with_env(platform: Platform) -> tuple[int, int]:
    """A demo "db" on a port that svc.local.toml changes, a one-shot "show" printing env
    built from its port and from .env; returns (the main file's port, the local one)."""
    main_port, local_port = free_ports(2)
    platform.add("db", tier="infra", port=main_port)
    platform.services["show"] = {
        "tier": "app", "kind": "oneshot", "command": SHOW, "depends_on": ["db"], "env": {"GREETING": "${GREETING}"},
    }  # fmt: skip
    platform.write()
    with platform.manifest.open("a") as manifest:
        manifest.write('\n[env]\nDATABASE_URL = "postgres://${DB_USER:-nobody}@127.0.0.1:{services.db.port}/app"\n')
    (platform.root / ".env").write_text("# project values\nDB_USER=alice\nGREETING=hello\nUNUSED=1\n")
    (platform.root / "svc.local.toml").write_text(f"[services.db]\nport = {local_port}\n")
    return main_port, local_port


def _show_line(platform: Platform, needle: str) -> str:
    log = platform.state_dir / "logs" / "show.log"

    def found() -> str | None:
        lines = log.read_text().splitlines() if log.exists() else []
        return next((line for line in lines if needle in line), None)

    return str(wait_until(found, timeout=30, what=f"{needle!r} in {log}"))


def test_up_resolves_env_from_dotenv_references_and_the_local_override(platform: Platform) -> None:
    _, local_port = _platform_with_env(platform)
    platform.svc("up", check=True)
    line = _show_line(platform, "URL=postgres")
    # .env feeds ${VAR} only (as in compose): UNUSED, never referenced, is not in the environment
    assert f"URL=postgres://alice@127.0.0.1:{local_port}/app GREETING=hello EXTRA= UNUSED=." in line
    assert platform.status()["db"]["port"] == local_port

    # a reload re-reads every file and resolves again: the dependent gets the new port
    new_port = platform.free_port()
    (platform.root / "svc.local.toml").write_text(f"[services.db]\nport = {new_port}\n")
    reload = platform.svc("reload", check=True)
    assert "show" in reload.stdout and "db" in reload.stdout
    _show_line(platform, f"URL=postgres://alice@127.0.0.1:{new_port}/app")


def test_further_files_reach_the_daemon_and_its_reloads(platform: Platform) -> None:
    _platform_with_env(platform)
    extra = platform.root / "ci.toml"
    extra.write_text('[services.show.env]\nEXTRA = "from-ci"\n')
    platform.svc("up", "-f", str(extra), check=True)
    _show_line(platform, "EXTRA=from-ci")
    daemon = Path(f"/proc/{platform.daemon_pid()}/cmdline").read_bytes().split(b"\0")
    assert str(extra).encode() in daemon

    extra.write_text('[services.show.env]\nEXTRA = "changed"\n')
    platform.svc("reload", "-f", str(extra), check=True)
    _show_line(platform, "EXTRA=changed")
    # the daemon re-reads ci.toml itself (it was given it at start), whoever asks for the reload
    extra.write_text('[services.show.env]\nEXTRA = "again"\n')
    platform.svc("reload", check=True)
    _show_line(platform, "EXTRA=again")


def test_check_names_the_file_and_line_of_a_bad_value_in_each_file(platform: Platform) -> None:
    _platform_with_env(platform)
    (platform.root / "svc.local.toml").write_text('# mine\n[services.show.env]\nDB = "{services.dbb.port}"\n')
    extra = platform.root / "ci.toml"
    extra.write_text('[services.db]\n\nrestart = "sometimes"\n')
    result = platform.svc("check", "-f", str(extra))
    assert result.returncode == 2, result.stdout + result.stderr
    local = platform.root / "svc.local.toml"
    assert re.search(
        rf'^{re.escape(str(local))}:3:1: error: services.show.env.DB: .*no service named "dbb"; did you mean "db"\?',
        result.stdout,
        re.M,
    ), result.stdout
    assert f"{extra}:3:1: error: services.db.restart: expected one of" in result.stdout
    assert platform.svc("check").returncode == 2  # svc.local.toml is read without -f


def test_a_required_variable_missing_is_an_error_and_dotenv_can_be_turned_off(platform: Platform) -> None:
    _platform_with_env(platform)
    platform.services["show"]["env"] = {"TOKEN": "${TOKEN:?put TOKEN in .env}"}  # replaces GREETING
    platform.write()
    result = platform.svc("check")
    assert result.returncode == 2
    assert "error: services.show.env.TOKEN: TOKEN is not set: put TOKEN in .env" in result.stdout
    with (platform.root / ".env").open("a") as dotenv:
        dotenv.write("TOKEN=t0k\n")
    assert platform.svc("check").returncode == 0
    platform.supervisor["dotenv"] = False
    platform.write()
    assert "TOKEN is not set" in platform.svc("check").stdout


def test_config_prints_resolved_values_as_written_and_origins(platform: Platform) -> None:
    _, local_port = _platform_with_env(platform)
    resolved = platform.svc("config", check=True).stdout
    assert f'DATABASE_URL = "postgres://alice@127.0.0.1:{local_port}/app"' in resolved
    unresolved = platform.svc("config", "--unresolved", check=True).stdout
    assert 'DATABASE_URL = "postgres://${DB_USER:-nobody}@127.0.0.1:{services.db.port}/app"' in unresolved
    assert f"port = {local_port}" in unresolved
    origin = platform.svc("config", "--origin", check=True).stdout.splitlines()
    manifest_lines = platform.manifest.read_text().split("\n")
    url_line = next(i for i, text in enumerate(manifest_lines, 1) if text.startswith("DATABASE_URL"))
    assert f'env.DATABASE_URL = "postgres://${{DB_USER:-nobody}}@127.0.0.1:{{services.db.port}}/app"  # {platform.manifest}:{url_line}' in origin
    assert f"services.db.port = {local_port}  # {platform.root / 'svc.local.toml'}:2" in origin
    table = manifest_lines.index("[services.db]")
    command_line = next(i for i, text in enumerate(manifest_lines[table:], table + 1) if text.startswith("command"))
    command = next(line for line in origin if line.startswith("services.db.command"))
    assert command.endswith(f"  # {platform.manifest}:{command_line}")


def test_a_state_dir_set_in_svc_local_toml_is_where_every_command_finds_the_daemon(platform: Platform) -> None:
    platform.add("db", tier="infra")
    platform.write()
    (platform.root / "svc.local.toml").write_text('[supervisor]\nstate_dir = "mine"\n')
    try:
        platform.svc("up", check=True)
        assert (platform.root / "mine" / "daemon.lock").exists()
        assert not (platform.root / ".svc").exists()
        status = platform.svc("status", "--json", check=True)  # the fast path reads state_dir without loading
        assert '"db"' in status.stdout
    finally:
        platform.svc("down")


def test_check_summary_counts_each_problem_under_the_file_it_came_from(platform: Platform) -> None:
    _platform_with_env(platform)
    local = platform.root / "svc.local.toml"
    local.write_text('[services.db]\nrestart = "sometimes"\n')
    extra = platform.root / "ci.toml"
    extra.write_text('[services.db]\nstop_timeout = "forever"\n')
    result = platform.svc("check", "-f", str(extra))
    assert result.returncode == 2
    summary = result.stdout.splitlines()[-1]
    assert summary.endswith(f" (merged over {platform.manifest})"), summary
    assert sorted(summary.removesuffix(f" (merged over {platform.manifest})").split("; ")) == sorted(
        [f"{local}: 1 error", f"{extra}: 1 error"]
    ), summary
    # an error in the main file too: it comes first, under its own name
    platform.services["db"]["ready_timeout"] = "soon"
    platform.write()
    both = platform.svc("check")
    assert both.stdout.splitlines()[-1] == f"{platform.manifest}: 1 error; {local}: 1 error", both.stdout


def test_add_port_auto_is_free_of_the_ports_of_every_merged_file(platform: Platform) -> None:
    from supervisord_lite.host.portinfo import listening_ports

    base = 23_400  # below the ephemeral range; ports in use are skipped whatever they are
    platform.tiers = {"app": {"order": 0, "ports": [f"{base}-{base + 49}"]}}
    platform.add("api", port=base)
    platform.write()
    local = platform.root / "svc.local.toml"
    local.write_text(f'[services.api]\nport = {base + 1}\n\n[services.mine]\ntier = "app"\nport = {base + 2}\ncommand = "x"\n')
    extra = platform.root / "ci.toml"
    extra.write_text(f'[services.ci]\ntier = "app"\nport = {base + 3}\ncommand = "x"\n')

    def lowest_free(taken: set[int]) -> int:
        busy = listening_ports()
        return next(p for p in range(base, base + 50) if p not in taken and p not in busy)

    # the main file still names base (a teammate without svc.local.toml uses it), the local file base+1 and base+2,
    # ci.toml base+3
    expected = lowest_free({base, base + 1, base + 2, base + 3})
    added = platform.svc("add", "web", "--tier", "app", "--port", "auto", "-c", "web {port}", "-f", str(extra))
    assert added.returncode == 0, added.stderr
    assert f"(tier app, port {expected})" in added.stdout, added.stdout
    assert f"port = {expected}\n" in platform.manifest.read_text()
    # without ci.toml its port is free for the next one; svc.local.toml is always read
    expected = lowest_free({base, base + 1, base + 2, expected})
    again = platform.svc("add", "worker", "--tier", "app", "--port", "auto", "-c", "w {port}", check=True)
    assert f"(tier app, port {expected})" in again.stdout, again.stdout
    # an explicit port that an override declares is refused, naming that file
    clash = platform.svc("add", "other", "--tier", "app", "--port", str(base + 2), "-c", "x")
    assert clash.returncode == 2 and f"{local}:" in clash.stderr and f"port {base + 2}" in clash.stderr, clash.stderr
    # a name an override brings is taken too, and the refusal says which file brings it
    before = platform.manifest.read_text()
    taken = platform.svc("add", "mine", "--tier", "app", "--port", "auto", "-c", "x")
    assert taken.returncode == 2, taken.stderr
    assert f'a service named "mine" already exists (defined in {local})' in taken.stderr, taken.stderr
    assert platform.manifest.read_text() == before  # nothing appended
    assert platform.svc("check").returncode == 0


def test_status_notes_any_file_of_the_manifest_changed_since_the_daemon_loaded_it(platform: Platform) -> None:
    _platform_with_env(platform)
    extra = platform.root / "ci.toml"
    extra.write_text('[services.show.env]\nEXTRA = "from-ci"\n')
    platform.svc("up", "-f", str(extra), check=True)

    def note() -> str:
        return next((line for line in platform.svc("status", check=True).stderr.splitlines() if "note:" in line), "")

    assert note() == ""
    for changed in (platform.root / "svc.local.toml", extra, platform.root / ".env"):
        text = changed.read_text()
        changed.write_text(text + "\n# edited\n")
        os.utime(changed, (time.time() + 5, time.time() + 5))  # a new mtime even on a coarse clock
        assert note() == f"note: {changed} changed since the daemon loaded it; `svc reload` applies the changes"
        platform.svc("reload", check=True)
        assert note() == ""
    # a svc.local.toml that appears (or goes away) is a change too
    (platform.root / "svc.local.toml").unlink()
    assert "svc.local.toml changed since the daemon loaded it" in note()
