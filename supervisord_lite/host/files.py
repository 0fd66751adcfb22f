"""Reading files the daemon writes (logs), for the CLI and the status page."""

from __future__ import annotations

import os
from pathlib import Path


def tail_file(path: Path, n: int) -> list[str]:
    if n <= 0:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-n:]
