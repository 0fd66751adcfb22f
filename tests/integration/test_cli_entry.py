"""The console script serves `svc down`, `svc status [--json]` and `--version` without
click (cli/entry.py): what it prints and its exit codes must be the click app's, in every
case, with and without a daemon; anything else goes to the click app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.integration.harness import SVC, Platform, port_accepts

#: The click app itself, as the console script ran it before it had a quick path.
CLICK_APP = [sys.executable, "-c", "from supervisord_lite.cli.app import main; main(prog_name='svc')"]

#: Reports which modules a command loaded (the quick path must not load click).
LOADED = (
    "import sys\n"
    "from supervisord_lite.cli.entry import main\n"
    "sys.argv = ['svc', *sys.argv[1:]]\n"
    "try:\n"
    "    main(prog_name='svc')\n"
    "finally:\n"
    "    sys.stderr.write('\\nLOADED ' + ','.join(m for m in ('click', 'rich', 'psutil') if m in sys.modules) + '\\n')\n"
)


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})
    return done.returncode, done.stdout, done.stderr


def both(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """(the console script's answer, the click app's answer) to ``svc ARGS``."""
    return run([*SVC, *args], cwd, env), run([*CLICK_APP, *args], cwd, env)


def loaded_by(cwd: Path, *args: str) -> set[str]:
    _code, _out, err = run([sys.executable, "-c", LOADED, *args], cwd)
    assert "\nLOADED " in err, err
    return {name for name in err.rsplit("\nLOADED ", 1)[1].strip().split(",") if name}


def test_without_a_daemon_every_quick_command_says_what_the_click_app_says(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> None:
    platform.add("api")
    platform.write()
    root, manifest = platform.root, str(platform.manifest)
    cases = [
        ("--version",),
        ("status",),  # found by the lookup: no daemon, exit 3
        ("status", "--json"),
        ("status", "-f", manifest),
        ("-f", manifest, "status", "--json"),
        ("down",),  # no daemon: nothing to stop, exit 0
        ("down", "--manifest", manifest),
        (f"--manifest={manifest}", "down"),
        ("status", "-f", "missing.toml"),  # exit 2, naming the file
        ("down", "-f", str(root)),  # a folder: click's usage error
        ("status", "--bogus"),
    ]
    for args in cases:
        quick, click_app = both(root, *args)
        assert quick == click_app, args
    assert both(root, "status")[0][0] == 3
    assert both(root, "status", "-f", "missing.toml")[0][0] == 2
    elsewhere = tmp_path_factory.mktemp("no-manifest-here")
    quick, click_app = both(elsewhere, "down", env={"SVC_MANIFEST": ""})
    assert quick == click_app and quick[0] == 2 and "no svc.toml in" in quick[2]


def test_with_a_daemon_down_and_status_match_the_click_app_and_load_no_click(platform: Platform) -> None:
    port = platform.add("api")
    platform.add("worker", port=False)
    platform.write()
    root = platform.root
    platform.svc("up", check=True)
    assert port is not None and port_accepts(port)

    quick, click_app = both(root, "status", "--json")
    assert quick[0] == click_app[0] == 0 and quick[2] == click_app[2] == ""
    seen, expected = json.loads(quick[1]), json.loads(click_app[1])
    assert seen.keys() == expected.keys()
    assert [(s["name"], s["state"], s["pid"]) for s in seen["services"]] == [
        (s["name"], s["state"], s["pid"]) for s in expected["services"]
    ]
    quick, click_app = both(root, "status")
    assert quick[0] == click_app[0] == 0
    assert [line.split()[:4] for line in quick[1].splitlines()] == [line.split()[:4] for line in click_app[1].splitlines()]
    assert loaded_by(root, "status") == set()
    assert loaded_by(root, "status", "--json") == set()
    assert loaded_by(root, "--version") == set()
    assert "click" in loaded_by(root, "status", "--help")

    assert run([*SVC, "down"], root) == (0, "stopped 2 services\n", "")
    assert not port_accepts(port)
    quick, click_app = both(root, "down")
    assert quick == click_app == (0, "nothing was running\n", "")
    assert loaded_by(root, "down") == set()


def test_a_manifest_changed_since_the_daemon_loaded_it_is_said_as_the_click_app_says_it(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    stat = platform.manifest.stat()
    os.utime(platform.manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    quick, click_app = both(platform.root, "status", "--json")
    assert quick[0] == click_app[0] == 0
    assert quick[2] == click_app[2] != ""
    assert "changed since the daemon loaded it" in quick[2]


@pytest.mark.parametrize("args", [("status", "--help"), ("down", "api"), ("--help",)])
def test_other_command_lines_go_to_the_click_app(platform: Platform, args: tuple[str, ...]) -> None:
    platform.add("api")
    platform.write()
    quick, click_app = both(platform.root, *args)
    assert quick == click_app
    assert "click" in loaded_by(platform.root, *args)


def test_shell_completion_is_clicks_even_for_a_quick_command(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    env = {"_SVC_COMPLETE": "bash_complete", "COMP_WORDS": "svc status --js", "COMP_CWORD": "2"}
    quick, click_app = both(platform.root, "status", "--js", env=env)
    assert quick == click_app
    assert "--json" in quick[1]


@pytest.mark.parametrize("args", [("down", "-f", ""), ("status", "-f", ""), ("-f", "", "status"), ("up", "-f", " ")])
def test_an_empty_manifest_path_is_a_usage_error_not_a_traceback(tmp_path: Path, args: tuple[str, ...]) -> None:
    """``-f ""`` (an unset shell variable) once reached pathlib, which read it as the
    current folder and raised inside the socket lookup."""
    code, out, err = run([*SVC, *args], tmp_path)
    assert code == 2, (code, out, err)
    assert "the manifest path is empty" in err
    assert "Traceback" not in err and "Traceback" not in out


#: Runs `svc ARGS` through the console script, noting for each daemon it spawns whether
#: click was loaded by then (the early start spawns it before the hand-over to click).
#: With $DAEMON_SERVES_BEFORE_CLICK, the early start waits until its daemon serves (the
#: race a loaded machine can run: the daemon is up before click has loaded).
SPAWNS = """
import os, subprocess, sys, time
from supervisord_lite.cli import daemon_start
from supervisord_lite.cli.client import is_serving, socket_for_path
from supervisord_lite.cli.entry import main

spawns = []
real_init = subprocess.Popen.__init__

def init(self, args, *a, **k):
    if 'supervisord_lite.daemon' in list(args):
        spawns.append('click' in sys.modules)
    real_init(self, args, *a, **k)

subprocess.Popen.__init__ = init
start_early = daemon_start.start_early

def start_and_wait(main_file):
    start_early(main_file)
    deadline = time.monotonic() + 30
    while not is_serving(socket_for_path(main_file)) and time.monotonic() < deadline:
        time.sleep(0.01)

if os.environ.get('DAEMON_SERVES_BEFORE_CLICK'):
    daemon_start.start_early = start_and_wait
sys.argv = ['svc', *sys.argv[1:]]
try:
    main(prog_name='svc')
finally:
    sys.stderr.write('\\nSPAWNS ' + ','.join('click' if c else 'early' for c in spawns) + '\\n')
"""


def spawns_of(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, list[str]]:
    """(exit code, what it printed, how each daemon spawn happened: 'early' or 'click')."""
    code, out, err = run([sys.executable, "-c", SPAWNS, *args], cwd, env)
    assert "\nSPAWNS " in err, err
    said, spawns = err.rsplit("\nSPAWNS ", 1)
    return code, out + said, [s for s in spawns.strip().split(",") if s]


def daemons_of(manifest: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "supervisord_lite.daemon" in cmdline and str(manifest.resolve()) in cmdline:
            found.append(proc)
    return found


@pytest.mark.parametrize("daemon_first", [False, True], ids=["as-usual", "daemon-serves-before-click-loads"])
def test_a_cold_up_starts_the_daemon_before_loading_click_and_only_once(platform: Platform, daemon_first: bool) -> None:
    port = platform.add("api")
    platform.write()
    env = {"DAEMON_SERVES_BEFORE_CLICK": "1"} if daemon_first else None
    code, said, spawns = spawns_of(platform.root, "up", "-f", str(platform.manifest), env=env)
    assert code == 0, said
    assert spawns == ["early"], said
    assert "started the daemon for" in said and "1/1 services ready" in said
    assert port is not None and port_accepts(port)
    assert platform.status()["api"]["state"] == "ready"
    # a daemon already running: nothing is spawned at all
    code, said, spawns = spawns_of(platform.root, "up", "-f", str(platform.manifest))
    assert code == 0 and spawns == [], said


@pytest.mark.parametrize("args", [("up", "api"), ("-f", "svc.toml", "-f", "more.toml", "up")])
def test_names_or_more_files_start_the_daemon_the_usual_way(platform: Platform, args: tuple[str, ...]) -> None:
    platform.add("api")
    platform.write()
    (platform.root / "more.toml").write_text("")
    code, said, spawns = spawns_of(platform.root, *args)
    assert code == 0, said
    assert spawns == ["click"], said


def test_up_of_an_invalid_manifest_leaves_no_daemon_and_no_state_folder(platform: Platform) -> None:
    """The daemon started early reads the same broken file and gives up; the command says
    what the click app says, and the state folder the early start made is gone again."""
    platform.add("api", port="not a port")
    platform.write()
    quick, click_app = both(platform.root, "up")
    assert quick == click_app, (quick, click_app)
    assert quick[0] == 2 and "api" in quick[2] and "port" in quick[2]
    assert not platform.state_dir.exists()
    assert daemons_of(platform.manifest) == []
    # the early start did run (it spawned a daemon before click), and still left nothing behind
    code, said, spawns = spawns_of(platform.root, "up")
    assert (code, spawns) == (2, ["early"]), said
    assert not platform.state_dir.exists()
    assert daemons_of(platform.manifest) == []


def test_an_invalid_manifest_keeps_a_state_folder_that_was_already_there(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    platform.svc("shutdown", check=True)
    platform.add("web", port="not a port")
    platform.write()
    code, said, spawns = spawns_of(platform.root, "up")
    assert (code, spawns) == (2, ["early"]), said
    assert (platform.state_dir / "daemon.log").exists()
    assert daemons_of(platform.manifest) == []
