"""Reading files the daemon writes (logs), for the CLI and the status page."""

from __future__ import annotations

import os
from pathlib import Path

from supervisord_lite.host import statedir


def tail_file(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of ``path`` (a link there is not followed: no lines)."""
    if n <= 0:
        return []
    try:
        with os.fdopen(statedir.open_file(path, os.O_RDONLY), "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-n:]
