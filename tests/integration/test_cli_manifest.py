"""``svc check|config|ports|who|add`` through the real ``svc`` entry point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from supervisord_lite.core.manifest import load_manifest, parse_manifest
from tests.conftest import PYTHON, ROOT, free_port, wait_until
from tests.integration.harness import Platform

SVC = Path(sys.executable).parent / "svc"
BIZOSAAS = ROOT / "config" / "bizosaas.toml"


def svc(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "SVC_MANIFEST"} | (env or {})
    return subprocess.run(
        [str(SVC), *args], capture_output=True, text=True, cwd=cwd or ROOT, env=environment, timeout=30
    )


@pytest.fixture
def listener() -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """A child process of ours listening on a free loopback port."""
    port = free_port()
    code = (
        "import socket, sys, time\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [PYTHON, "-c", code, "listener-for-test"], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        yield port, child
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def test_check_bizosaas_has_no_errors() -> None:
    result = svc("check", "-f", "config/bizosaas.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("config/bizosaas.toml: 16 services")
    assert " error" not in result.stdout


def test_check_reports_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[services.api]\nport = 70000\ncommand = ""\nprot = 1\n\n[services.web]\ncommand = "x"\ndepends_on = ["apii"]\n'
    )
    result = svc("check", "-f", str(path))
    assert result.returncode == 2
    assert result.stdout.splitlines() == [
        f"{path}:2:1: error: services.api.port: port 70000 is outside 1-65535",
        f"{path}:3:1: error: services.api.command: the command is empty",
        f'{path}:4:1: error: services.api.prot: unknown key "prot"; did you mean "port"?',
        f'{path}:8:1: error: services.web.depends_on: depends on "apii", but no service has that name; '
        'did you mean "api"?',
        f"{path}: 4 errors",
    ]


def test_check_syntax_error_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[services.api]\ncommand = "x\n')
    result = svc("check", "-f", str(path))
    assert result.returncode == 2
    assert result.stdout.startswith(f"{path}:2:13: error: invalid TOML: ")
    missing = svc("check", "-f", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "no such manifest file" in missing.stdout


def test_check_warns_about_a_port_held_by_another_process(
    tmp_path: Path, listener: tuple[int, subprocess.Popen[str]]
) -> None:
    port, child = listener
    path = tmp_path / "svc.toml"
    path.write_text(f'[services.api]\nport = {port}\ncommand = "serve"\n')
    result = svc("check", "-f", str(path))
    assert result.returncode == 0
    assert f"warning: services.api.port: port {port} is already in use by pid {child.pid}" in result.stdout
    assert "listener-for-test" in result.stdout
    # the OS picked the port from its ephemeral range, which check names too
    assert f"port {port} is in this machine's ephemeral port range" in result.stdout
    assert result.stdout.splitlines()[-1] == f"{path}: 1 service, 2 warnings"


def test_manifest_lookup_order(tmp_path: Path) -> None:
    (tmp_path / "svc.toml").write_text('[services.here]\ncommand = "x"\n')
    other = tmp_path / "other.toml"
    # metrics off: two projects on the default metrics port would be warned about (svc check, registry)
    other.write_text('[supervisor]\nmetrics = ""\n[services.one]\ncommand = "x"\n[services.two]\ncommand = "x"\n')
    assert svc("check", cwd=tmp_path).stdout.strip() == "svc.toml: 1 service, no problems"
    by_env = svc("check", cwd=tmp_path, env={"SVC_MANIFEST": str(other)})
    assert by_env.stdout.strip() == f"{other}: 2 services, no problems"
    group_flag = svc("-f", "svc.toml", "check", cwd=tmp_path, env={"SVC_MANIFEST": str(other)})
    assert group_flag.stdout.strip() == "svc.toml: 1 service, no problems"


def test_config_prints_the_resolved_manifest_that_loads_back() -> None:
    result = svc("config", "-f", str(BIZOSAAS))
    assert result.returncode == 0, result.stderr
    data = tomllib.loads(result.stdout)
    assert data["services"]["postgres"]["command"][:3] == ["postgres", "-D", "../data/postgres"]
    assert data["services"]["admin"]["restart"] == "on-failure"  # a default, filled in
    assert parse_manifest(result.stdout, BIZOSAAS) == load_manifest(BIZOSAAS)


def test_config_of_an_invalid_manifest_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "svc.toml"
    path.write_text("[services.api]\ncommand = []\n")
    result = svc("config", "-f", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert "services.api.command: the command is empty" in result.stderr


@pytest.mark.parametrize(
    "contents", ['[services.api]\nport = 70000\ncommand = ""\nprot = 1\n', '[services.api]\ncommand = "x\n', None]
)
def test_every_command_reports_a_broken_manifest_with_the_lines_of_check(tmp_path: Path, contents: str | None) -> None:
    path = tmp_path / "svc.toml"
    if contents is not None:
        path.write_text(contents)
    check = svc("check", "-f", str(path))
    assert check.returncode == 2 and check.stdout.splitlines()[-1].startswith(f"{path}: ")
    commands = [["up"], ["config"], ["ports"], ["export", "--to", "compose", "-o", str(tmp_path / "out")], ["status"],
                ["shutdown"], ["logs", "api"]]
    if contents is None:  # a file that is there but does not validate: these still reach a running daemon
        commands += [["down"], ["reload"], ["status", "--watch"]]
    for command in commands:
        flag = "--manifest" if command[0] == "logs" else "-f"
        result = svc(*command, flag, str(path), cwd=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (2, "", check.stdout), command
    assert not (tmp_path / "out").exists() and not (tmp_path / ".svc").exists()  # nothing was started or written


def test_ports_markdown_and_json() -> None:
    markdown = svc("ports", "-f", "config/bizosaas.toml")
    assert markdown.returncode == 0, markdown.stderr
    assert "| 3009 | BizOSaaS SQLAlchemy Admin (`admin`) | http://localhost:3009/admin |" in markdown.stdout
    assert "| 3011 | Super Admin Dashboard (`super-admin`) | ~~http://localhost:3011~~ |" in markdown.stdout
    assert "from `config/bizosaas.toml`" in markdown.stdout
    as_json = svc("ports", "--format", "json", "-f", "config/bizosaas.toml")
    data = json.loads(as_json.stdout)
    ports = sorted(row["port"] for tier in data["tiers"] for row in tier["services"])
    assert ports == [3006, 3007, 3008, 3009, 3010, 3011, 3012, 5432, 5433, 6379, 6380, 8000, 8001, 8002, 8003]
    assert svc("ports", "--format", "yaml", "-f", "config/bizosaas.toml").returncode == 2


def test_who_names_the_listener_and_the_declaring_service(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, listener: tuple[int, subprocess.Popen[str]]
) -> None:
    port, child = listener
    path = tmp_path / "svc.toml"
    path.write_text(f'[services.api]\nport = {port}\ncommand = "serve"\n')
    result = svc("who", str(port), "-f", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"port:     {port}")
    assert lines[1] == f"pid:      {child.pid}"
    assert lines[2].startswith("user:     ") and lines[2] != "user:     ?"
    assert lines[3].startswith(f"command:  {PYTHON} -c import socket") and lines[3].endswith("\\n listener-for-test")
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime(psutil.Process(child.pid).create_time()))
    assert lines[4].startswith(f"started:  {started}") and lines[4].endswith(" ago)"), lines[4]
    assert lines[5] == "owner:    not a service of any svc daemon in this machine's registry"
    assert lines[6] == (
        f"service:  api (tier default, {path}) declares this port, but this listener is not ours: "
        f"no daemon of {path} is running"
    )

    elsewhere = tmp_path_factory.mktemp("no-manifest-here")  # not below tmp_path: the lookup would find its svc.toml
    without_manifest = svc("who", str(port), cwd=elsewhere)
    assert without_manifest.returncode == 0 and "service:" not in without_manifest.stdout


def test_who_as_root_names_a_foreign_listener_on_a_declared_port_of_a_running_platform(
    platform: Platform, listener: tuple[int, subprocess.Popen[str]]
) -> None:
    """The listener a service of ours wants, held by a process we did not start: root sees its
    pid, user, command and start, and is told plainly that it is not ours (never "run as root")."""
    if os.geteuid() != 0:
        pytest.skip("the root view; the other user's view is tested below")
    port, child = listener
    platform.add("api", port=port, ready={"tcp": True})
    platform.write()
    platform.svc("up", "--no-wait", check=True)
    platform.wait_state("api", "conflict")
    result = svc("who", str(port), "-f", str(platform.manifest))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "run as root" not in result.stdout
    assert lines[1] == f"pid:      {child.pid}"
    assert lines[2] == "user:     root"
    assert lines[4].startswith("started:  ")
    assert lines[-1] == (
        f"service:  api (tier app, {platform.manifest}) declares this port, but this listener is not ours: "
        "api is conflict"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run svc who as a second user")
def test_who_as_another_user_says_the_pid_needs_root(
    tmp_path: Path, listener: tuple[int, subprocess.Popen[str]]
) -> None:
    """A non-root user cannot see the process behind root's socket: svc who says so, and still
    names the socket's owner (from the kernel's table)."""
    import pwd
    import sysconfig

    port, _child = listener
    nobody = pwd.getpwnam("nobody")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{sysconfig.get_paths()['purelib']}"}
    for python in (sys.executable, "/usr/bin/python3"):
        try:
            result = subprocess.run([python, "-m", "supervisord_lite", "who", str(port)], user=nobody.pw_uid,
                                    group=nobody.pw_gid, extra_groups=[], env=env, capture_output=True, text=True,
                                    cwd="/tmp", timeout=30)
        except PermissionError:
            continue
        if "No module named" not in result.stderr:
            break
    else:
        pytest.skip("no Python interpreter the nobody user can run with this package")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == ("pid:      unknown: the socket belongs to user root, and only root may see another user's "
                        "processes: run svc who as root to name it")
    assert lines[2] == "user:     root"


def test_who_says_when_a_listener_is_not_one_of_ours(
    tmp_path: Path, listener: tuple[int, subprocess.Popen[str]]
) -> None:
    port, _child = listener
    path = tmp_path / "svc.toml"
    path.write_text(f'[supervisor]\nmetrics = ""\n[services.api]\nport = {free_port()}\ncommand = "serve"\n')
    result = svc("who", str(port), "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"service:  none: not one of ours (no service of {path} has port {port})"
    # the manifest's metrics address, held by something that is not its daemon
    path.write_text(f'[supervisor]\nmetrics = "127.0.0.1:{port}"\n[services.api]\ncommand = "serve"\n')
    metrics = svc("who", str(port), "-f", str(path))
    assert metrics.stdout.splitlines()[-1] == (
        f"service:  none: {path} wants this port for its metrics (supervisor.metrics), but this process is not its daemon"
    )


def test_who_names_the_daemon_on_its_metrics_port_and_add_says_to_reload(platform: Platform) -> None:
    metrics_port = free_port()
    platform.supervisor["metrics"] = f"127.0.0.1:{metrics_port}"
    platform.add("db", tier="infra")
    platform.write()
    platform.svc("up", check=True)
    who = svc("who", str(metrics_port), "-f", str(platform.manifest))
    assert who.stdout.splitlines()[1] == f"pid:      {platform.daemon_pid()}"
    assert who.stdout.splitlines()[-1] == (
        f"service:  none: this is the svc daemon of {platform.manifest} (its metrics endpoint, supervisor.metrics)"
    )
    # the daemon knows only the manifest it loaded: svc add says how to start the new service
    added = svc("add", "cache", "--tier", "infra", "--command", "python -m supervisord_lite.demo --port {port}",
                "--port", str(free_port()), "-f", str(platform.manifest))  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines()[-1] == (
        f"the daemon runs the manifest as it last loaded it: `svc reload -f {platform.manifest}` starts cache"
    )
    platform.svc("reload", check=True)
    platform.wait_state("cache", "ready")


def test_who_on_a_free_port_exits_1(tmp_path: Path) -> None:
    port = free_port()
    result = svc("who", str(port), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"svc: nothing listens on port {port}"
    assert svc("who", "0").returncode == 2


def test_add_keeps_comments_and_refuses_conflicts(tmp_path: Path) -> None:
    path = tmp_path / "svc.toml"
    original = (
        "# hand-written, keep me\n[tiers.web]\norder = 0\nports = ['4100-4199']  # ours\n\n"
        "[services.site]\ntier = 'web'\nport = 4100\ncommand = 'serve {port}'\n"
    )
    path.write_text(original)
    added = svc(
        "add", "api", "--tier", "web", "--command", "uvicorn app:app --port {port}", "--port", "auto",
        "--depends-on", "site", "--description", "The API", "-f", str(path),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"added service api to {path} (tier web, port 4101)"
    text = path.read_text()
    assert text.startswith(original)
    assert load_manifest(path).services["api"].command == ("uvicorn", "app:app", "--port", "4101")
    assert svc("check", "-f", str(path)).returncode == 0

    for args, message in [
        (["api", "--tier", "web", "--command", "x"], 'a service named "api" already exists'),
        (["other", "--tier", "web", "--command", "x", "--port", "4100"], "port 4100 is already taken by site"),
        (["other", "--tier", "web", "--command", "x", "--port", "5000"], "outside the ranges of tier web"),
        (["other", "--tier", "nope", "--command", "x"], 'unknown tier "nope"'),
        (["other", "--tier", "web", "--command", "x", "--depends-on", "ghost"], 'depends on "ghost"'),
    ]:
        refused = svc("add", *args, "-f", str(path))
        assert refused.returncode == 2, args
        assert message in refused.stderr, refused.stderr
        assert refused.stderr.strip().endswith(f"svc: nothing written to {path}")
        # nothing was written, so no line number past the end of the file
        assert f"{path}:1" not in refused.stderr, refused.stderr  # (the file has 9 lines)
        assert path.read_text() == text
    bad_port = svc("add", "x", "--command", "x", "--port", "lots", "-f", str(path))
    assert bad_port.returncode == 2 and "neither a port number nor" in bad_port.stderr


# Manifests that cannot run or cannot be loaded safely: `svc check` says what is wrong,
# at the key, and exits 2 (a traceback with exit 1 before; "no problems" for the first four).
HOSTILE = [
    ("nul-in-command", '[services.api]\ncommand = "serve\\u0000 --now"\n',
     '{path}:2:1: error: services.api.command: the argument "serve\\x00" contains a NUL byte, '
     "which a process cannot be given"),
    ("nul-in-env", '[services.api]\ncommand = "serve"\nenv = { TOKEN = "a\\u0000b" }\n',
     "{path}:3:9: error: services.api.env.TOKEN: the value contains a NUL byte, which a process cannot be given"),
    ("env-key-with-equals", '[services.api]\ncommand = "serve"\nenv = { "A=B" = "c" }\n',
     '{path}:3:9: error: services.api.env.A=B: "A=B" is not an environment variable name: use letters, digits '
     'and "_", not starting with a digit'),
    ("300-character-name", "[services." + "n" * 300 + ']\ncommand = "serve"\n',
     "{path}:1:2: error: services." + "n" * 77 + '...: "' + "n" * 57 + '..." is not a valid service name: '
     "300 characters, at most 63"),
    ("100000-deep-array", "x = " + "[" * 100_000 + "]" * 100_000 + "\n",
     "{path}:1:15: error: arrays and inline tables are nested more than 10 deep, the limit"),
    ("ready-timeout-400-digits", '[services.api]\ncommand = "serve"\nready_timeout = ' + "9" * 400 + "\n",
     "{path}:3:1: error: services.api.ready_timeout: an integer beyond 64 bits "
     "(TOML integers go from -2^63 to 2^63-1)"),
    ("log-max-bytes-400-digits", '[supervisor]\nlog_max_bytes = "' + "9" * 400 + 'GiB"\n',
     "{path}:2:1: error: supervisor.log_max_bytes: '" + "9" * 36 + "... is too large: sizes go from 1 byte to 1TiB"),
    ("log-backups-100000000", "[supervisor]\nlog_backups = 100000000\n",
     "{path}:2:1: error: supervisor.log_backups: log_backups 100000000 is outside 0-100"),
    ("20000-part-header", "[" + ".".join(["a"] * 20_000) + "]\n",
     "{path}:1:2: error: a dotted key or table name has more than 10 parts, the limit"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "first_line"), [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_check_says_what_is_wrong_with_a_manifest_that_cannot_run(tmp_path: Path, text: str, first_line: str) -> None:
    path = tmp_path / "svc.toml"
    path.write_text(text)
    result = svc("check", "-f", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == first_line.format(path=path)
    assert "Traceback" not in result.stdout + result.stderr
    for command in ("status", "config"):  # every command that loads the manifest refuses it the same way
        other = svc(command, "-f", str(path))
        assert other.returncode == 2, (command, other.stdout, other.stderr)
        assert first_line.format(path=path) in other.stderr and "Traceback" not in other.stderr


def test_reload_and_sighup_refuse_hostile_manifests_and_the_daemon_stays(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    daemon, pid = platform.daemon_pid(), platform.status()["api"]["pid"]
    good = platform.manifest.read_text()
    for name, text, first_line in HOSTILE:
        platform.manifest.write_text(good + "\n" + text)
        result = platform.svc("reload")
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert "reload refused" in result.stderr and "Traceback" not in result.stderr, (name, result.stderr)
        errors_before = json.loads(platform.svc("status", "--json", check=True).stdout)["reloads_error"]
        os.kill(daemon or 0, signal.SIGHUP)
        wait_until(
            lambda: json.loads(platform.svc("status", "--json", check=True).stdout)["reloads_error"] > errors_before,
            what=f"the SIGHUP reload of {name} to be refused",
        )
        assert platform.daemon_pid() == daemon and platform.status()["api"]["pid"] == pid, name
    platform.manifest.write_text(good)
    assert platform.svc("reload").returncode == 0
    assert platform.status()["api"]["state"] == "ready"
