"""The `svc` console script: its hot, plain commands without click.

`svc down`, `svc status` and `svc --version` run from scripts, benches and prompts many
times a day, and importing click is a third of what such a command costs. ``main`` serves
their plain forms itself (``-f/--manifest`` before or after the command, `status --json`)
and hands every other command line to the click app (``cli.app.main``): help, completion,
names, other options, and any case this path does not handle. The hand-over happens
before anything reaches the daemon (a `down` whose daemon cannot be reached has sent
nothing; a `status` only reads), so what users see, errors and exit codes included, is
what the click app says.

A plain `svc up` with no daemon running is handed over too, but only after the daemon
has been started here: it boots while click and the manifest load (``cli.daemon_start``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

from supervisord_lite.core.cmdline import UnusableManifestOption, manifest_options
from supervisord_lite.core.exitcodes import ExitCode

MANIFEST_NAME = "svc.toml"

#: The commands served here, and the flags each takes here (anything else goes to click).
QUICK_COMMANDS: dict[str, frozenset[str]] = {"down": frozenset(), "status": frozenset({"--json"})}
#: Commands handed to click after the daemon is started here when none runs (the plain
#: forms: one manifest file, no names), and their flags that may come with it.
EARLY_START_COMMANDS: dict[str, frozenset[str]] = {"up": frozenset({"--no-wait", "-a", "--attach"})}


class _HandOver(Exception):
    """This path does not serve the command line: the click app does."""


def main(prog_name: str | None = None) -> None:
    """The console script: a quick command, or the click app with the same arguments."""
    args = sys.argv[1:]
    prog = prog_name or os.path.basename(sys.argv[0])
    try:
        if _completion_requested(prog):
            raise _HandOver
        sys.exit(_quick(args, prog))
    except _HandOver:
        pass
    except KeyboardInterrupt:  # as click says it
        sys.stderr.write("\nAborted!\n")
        sys.exit(ExitCode.FAILED)
    except BrokenPipeError:  # `svc status | head`: as click ends it
        _quiet_broken_pipe()
        sys.exit(ExitCode.FAILED)
    from supervisord_lite.cli.app import main as click_main

    click_main(prog_name=prog_name)


def _completion_requested(prog: str) -> bool:
    name = prog.replace("-", "_").replace(".", "_")
    return bool(os.environ.get(f"_{name}_COMPLETE".upper()))


def _quiet_broken_pipe() -> None:
    """Nothing more can reach a closed pipe: keep the interpreter's final flush quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _quick(args: list[str], prog: str) -> int:
    """Serve ``args`` and return the exit code; ``_HandOver`` when the click app should."""
    if args == ["--version"]:
        from supervisord_lite import __version__

        sys.stdout.write(f"{prog}, version {__version__}\n")
        return ExitCode.OK
    try:
        command, files, flags = _parse(args, QUICK_COMMANDS)
    except _HandOver:
        _start_daemon_early(args)
        raise
    if command == "down":
        return _down(files[0])
    return _status(files[0], as_json="--json" in flags)


def _start_daemon_early(args: list[str]) -> None:
    """`svc up` with no daemon running: start the daemon now, while click and the manifest
    load, so that it is ready sooner (``cli.daemon_start``). Only for one manifest file,
    given or looked up, and no names: anything else starts it the usual way."""
    try:
        _command, files, _flags = _parse(args, EARLY_START_COMMANDS)
    except _HandOver:
        return
    if len(files) != 1:
        return
    from supervisord_lite.cli.daemon_start import start_early

    start_early(files[0])


def _parse(args: list[str], commands: dict[str, frozenset[str]]) -> tuple[str, list[Path], set[str]]:
    """(command, manifest files, flags) of ``[-f F]... CMD [-f F | FLAG]...``, ``commands``
    giving the commands it knows and the flags of each."""
    command: str | None = None
    given: tuple[list[str], list[str]] = ([], [])  # -f before the command, after it
    flags: set[str] = set()
    try:
        for value, arg in manifest_options(args):
            if value is not None:
                if os.path.isdir(value):
                    raise _HandOver  # click's own message for it
                given[command is not None].append(value)
            elif command is None and arg in commands:
                command = arg
            elif command is not None and arg in commands[command]:
                flags.add(arg)
            else:
                raise _HandOver
    except UnusableManifestOption:
        raise _HandOver from None  # click's own message for it
    if command is None:
        raise _HandOver
    chosen = given[1] or given[0]  # the command's own -f wins over one before it
    path = Path(chosen[0]) if chosen else lookup_manifest()
    if path is None or not path.exists():
        raise _HandOver  # the click app says where it looked, or what is missing
    return command, [path, *map(Path, chosen[1:])], flags


def lookup_manifest() -> Path | None:
    """With no -f: $SVC_MANIFEST, else svc.toml in the current folder or the nearest folder
    above it (as git and compose look); None when there is none. A file found in the
    current folder is named ``svc.toml``, one found above by its absolute path."""
    env = os.environ.get("SVC_MANIFEST")
    if env:
        return Path(env)
    here = current_folder()
    if here is None:
        return None
    if os.path.exists(here / MANIFEST_NAME):
        return Path(MANIFEST_NAME)
    for folder in here.parents:
        if os.path.exists(folder / MANIFEST_NAME):
            return folder / MANIFEST_NAME
    return None


def current_folder() -> Path | None:
    try:
        return Path.cwd()
    except OSError:  # removed while we stand in it
        return None


def _down(path: Path) -> int:
    """`svc down`: stop every service, as ``cli.daemon_commands.down`` does with no name."""
    from supervisord_lite.cli import client
    from supervisord_lite.core.protocol import ControlError, DaemonUnreachable

    try:
        result = client.down(client.socket_for_path(path), ())
    except DaemonUnreachable:
        raise _HandOver from None  # nothing was sent: the click app stops what a dead daemon left
    except ControlError as exc:
        _fail(str(exc), exc.code)
    from supervisord_lite.cli.down_summary import down_lines, overtaken_line

    sys.stdout.write("".join(f"{line}\n" for line in down_lines(result)))
    if (overtaken := overtaken_line(result)) is not None:
        sys.stderr.write(f"{overtaken}\n")
        return ExitCode.FAILED
    return ExitCode.OK


def _status(path: Path, *, as_json: bool) -> int:
    """`svc status [--json]`, as ``cli.daemon_commands.status`` does with no name."""
    from supervisord_lite.cli import client
    from supervisord_lite.cli.statusview import changed_source, show_status
    from supervisord_lite.core.protocol import ControlError, DaemonUnreachable

    try:
        data = client.status(client.socket_for_path(path), timeout=10)
    except DaemonUnreachable:
        raise _HandOver from None  # it says whether the manifest is invalid, or no daemon runs
    except ControlError as exc:
        _fail(str(exc), exc.code)
    if changed_source(data, path) is not None:
        raise _HandOver  # it validates the changed file and says so
    if as_json:
        import json

        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return ExitCode.OK
    from supervisord_lite.core.snapshot import SupervisorSnapshot

    show_status(SupervisorSnapshot.from_dict(data))
    return ExitCode.OK


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"svc: {message}\n")
    sys.exit(code)
