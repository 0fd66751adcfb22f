"""``svc export``: the manifest rendered for Docker Compose, Kubernetes or systemd.

The renderers (``compose``, ``kubernetes``, ``systemd``) are pure: a ``Manifest`` in,
file name -> text out. This module picks one, and is the thin edge that touches
the machine: it resolves executables for systemd and writes the files.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from supervisord_lite.core.model import Manifest
from supervisord_lite.export import compose
from supervisord_lite.export import kubernetes
from supervisord_lite.export import systemd
from supervisord_lite.export.common import DEFAULT_WAIT_IMAGE, GENERATED, ExportError, ExportOptions, Target

__all__ = [
    "DEFAULT_WAIT_IMAGE",
    "ExportError",
    "ExportOptions",
    "Target",
    "WriteResult",
    "export_manifest",
    "render",
    "resolve_executable",
    "write_files",
]

_RENDERERS = {Target.COMPOSE: compose.render, Target.KUBERNETES: kubernetes.render, Target.SYSTEMD: systemd.render}


def render(m: Manifest, target: Target, options: ExportOptions | None = None) -> dict[str, str]:
    """File name -> text of ``m`` for ``target``.

    :raises ExportError: the manifest cannot be exported there (the problems say why).
    """
    return _RENDERERS[target](m, options or ExportOptions())


def resolve_executable(name: str) -> str | None:
    """A program name as the daemon finds it: its own interpreter's folder first, then PATH."""
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    path = os.pathsep.join([bin_dir, os.environ.get("PATH", os.defpath)])
    found = shutil.which(name, path=path)
    return os.path.abspath(found) if found else None


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: list[Path]
    removed: list[Path]  # files of an earlier export that this one no longer produces


def _is_ours(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            return GENERATED in f.readline()
    except (OSError, UnicodeDecodeError):
        return False


def write_files(files: Mapping[str, str], out_dir: Path) -> WriteResult:
    """Write ``files`` into ``out_dir`` (created), each atomically.

    Files left from an earlier export (their first line says so) that this export no
    longer produces are removed, so a dropped service leaves no stale unit behind.
    Other files in the folder are never touched.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    removed = []
    for old in sorted(out_dir.iterdir()):
        if old.name not in files and old.is_file() and _is_ours(old):
            old.unlink()
            removed.append(old)
    written = []
    for name, text in files.items():
        target = out_dir / name
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return WriteResult(written, removed)


def export_manifest(
    m: Manifest,
    target: Target | str,
    out_dir: Path,
    *,
    allow_missing_images: bool = False,
    wait_image: str = DEFAULT_WAIT_IMAGE,
) -> WriteResult:
    """Render ``m`` for ``target`` and write the files into ``out_dir``.

    :raises ExportError: the manifest cannot be exported there; nothing is written.
    :raises OSError: a file could not be written.
    """
    options = ExportOptions(
        out_dir=out_dir,
        allow_missing_images=allow_missing_images,
        wait_image=wait_image,
        resolve_executable=resolve_executable,
    )
    files = render(m, Target(target), options)
    return write_files(files, out_dir)

