"""``python -m supervisord_lite.daemon -f MANIFEST``: run the daemon in the foreground.

This is what ``svc up`` starts in the background and what ``svc daemon`` (the systemd
unit's command) becomes: the CLI execs this module rather than importing the daemon,
so the command line never loads the runtime.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from supervisord_lite.core.cmdline import UnusableManifestOption, manifest_options

if TYPE_CHECKING:
    import argparse


def import_structlog_without_rich() -> None:
    """Import structlog while rich cannot be found, when rich is not loaded yet.

    rich is installed for the command line, and structlog's dev module imports it for
    prettier tracebacks (about 55 ms and 4 MB of the daemon's start). The daemon never
    uses rich: its console renderer is given the plain traceback formatter explicitly
    (runtime/logs.py), so an exception reads the same either way. rich is hidden only
    for that import, so anything that asks for it later still finds it."""
    if "rich" in sys.modules or "structlog" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # an import of rich now raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        if sys.modules.get("rich", ...) is None:
            del sys.modules["rich"]


def help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter at the terminal's width, found without ``shutil``: argparse
    imports it for that (with lzma and bz2), ~0.7 MB the daemon would keep for nothing."""
    import argparse

    try:
        width = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            width = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, OSError, ValueError):
            width = 80
    return argparse.HelpFormatter(prog, width=width - 2)


#: What a daemon's command line says: the manifest files (the first, then those merged
#: over it) and JSON logs (True), logs for people (False) or the default (None).
Arguments = tuple[list[Path], bool | None]


def plain_arguments(argv: list[str]) -> Arguments | None:
    """The command line `svc up` and `svc daemon` give (``-f FILE``... and a log format),
    read without argparse: argparse with gettext and locale, and what parsing leaves
    behind, stay in the daemon's memory for good (~0.8 MB). None for any other command
    line (``--help``, a mistake): ``parse_arguments`` then reads it, and says what is wrong."""
    files: list[Path] = []
    json_logs: bool | None = None
    log_flags = {"--json-logs": True, "--console-logs": False}
    try:
        for value, arg in manifest_options(argv):
            if value is not None:
                files.append(Path(value))
            elif arg in log_flags and (json_logs is None or json_logs is log_flags[arg]):
                json_logs = log_flags[arg]
            else:
                return None
    except UnusableManifestOption:
        return None
    return (files, json_logs) if files else None


def parse_arguments(argv: list[str]) -> Arguments:
    import argparse  # lazy: see plain_arguments

    parser = argparse.ArgumentParser(
        prog="svc daemon", description="Run the daemon of one manifest in the foreground.", formatter_class=help_formatter
    )
    parser.add_argument(
        "-f",
        "--manifest",
        type=Path,
        action="append",
        required=True,
        help="The manifest file; each further -f is merged over it (after svc.local.toml beside it).",
    )
    logs = parser.add_mutually_exclusive_group()
    logs.add_argument("--json-logs", dest="json_logs", action="store_true", default=None, help="Log JSON lines.")
    logs.add_argument("--console-logs", dest="json_logs", action="store_false", help="Log for people.")
    args = parser.parse_args(argv)
    return args.manifest, args.json_logs


def run(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    files, json_logs = plain_arguments(given) or parse_arguments(given)
    import_structlog_without_rich()
    from supervisord_lite.daemon.main import main

    main_file, *overlays = files
    return main(main_file.resolve(), json_logs, tuple(overlay.resolve() for overlay in overlays))


if __name__ == "__main__":
    sys.exit(run())
