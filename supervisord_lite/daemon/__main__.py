"""``python -m supervisord_lite.daemon -f MANIFEST``: run the daemon in the foreground.

This is what ``svc up`` starts in the background and what ``svc daemon`` (the systemd
unit's command) becomes: the CLI execs this module rather than importing the daemon,
so the command line never loads the runtime.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="svc daemon", description="Run the daemon of one manifest in the foreground.")
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
    if "rich" not in sys.modules:
        # structlog pulls in rich (~4 MB) only for prettier tracebacks; a daemon that
        # supervises hundreds of services is better off small
        sys.modules["rich"] = None  # type: ignore[assignment]
    from supervisord_lite.daemon.main import main

    main_file, *overlays = args.manifest
    return main(main_file.resolve(), args.json_logs, tuple(overlay.resolve() for overlay in overlays))


if __name__ == "__main__":
    sys.exit(run())
