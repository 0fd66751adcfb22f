"""What `svc status` prints, without click: the console script's quick path
(``cli/entry.py``) and the click command (``cli/daemon_commands.py``) share it.

``changed_source`` tells whether a file the daemon read changed since; ``show_status``
prints the table (colours, and whole columns left out to fit, on a terminal), then why
each service that needs a look is where it is.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisord_lite.core.snapshot import SupervisorSnapshot


def changed_source(data: dict[str, Any], path: Path) -> Path | None:
    """The first file the daemon's manifest was read from (the main file, svc.local.toml, -f
    files, .env) whose mtime is not what it was when the daemon loaded it; a file created or
    removed since counts. Named as ``path`` names the main file (relative stays relative)."""
    try:
        main_mtime: float | None = path.stat().st_mtime
    except OSError:
        main_mtime = None
    if data.get("manifest_mtime") != main_mtime:
        return path
    main = path.resolve()
    for name, loaded in (data.get("source_mtimes") or {}).items():
        source = Path(name)
        if source == main:
            continue
        try:
            now: float | None = source.stat().st_mtime
        except OSError:
            now = None
        if now != loaded:
            return path.parent / source.name if source.parent == main.parent else source
    return None


def show_status(snap: SupervisorSnapshot) -> None:
    """The status table, then the lines that say why a service needs a look."""
    from supervisord_lite.cli.render import (  # lazy: keeps svc --help fast
        STATE_STYLE,
        STATUS_COLUMNS,
        STATUS_PRIORITY,
        attention_lines,
        fit_columns,
        plain_table,
        status_rows,
    )

    rows = status_rows(snap, time.time())
    out = sys.stdout
    if out.isatty():
        from rich.console import Console  # lazy: rich is slow to import, and only a terminal needs it
        from rich.table import Table

        console = Console()
        shown = fit_columns(STATUS_COLUMNS, rows, console.width, STATUS_PRIORITY).shown
        table = Table(title=f"{snap.name} ({snap.manifest})", box=None, pad_edge=False)
        for i in shown:
            table.add_column(STATUS_COLUMNS[i], no_wrap=True)
        state_col = STATUS_COLUMNS.index("STATE")
        for s, row in zip(snap.services, rows, strict=True):
            style = STATE_STYLE.get(s.state, "")
            table.add_row(*(f"[{style}]{row[i]}[/]" if i == state_col else row[i] for i in shown))
        console.print(table)
        hidden = [STATUS_COLUMNS[i] for i in range(len(STATUS_COLUMNS)) if i not in shown]
        if hidden:
            console.print(f"[dim](too narrow for {', '.join(hidden)}: widen the window, or use --json)[/]")
    else:
        out.write(plain_table(STATUS_COLUMNS, rows) + "\n")
    for line in attention_lines(snap.services):
        out.write(line + "\n")
    out.flush()
