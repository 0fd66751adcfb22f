"""Several manifest documents merged into one, remembering which file set each value.

The first document is the main manifest; each later one (``svc.local.toml``, then
every further ``-f``) is merged over it: tables merge key by key, anything else
(a string, a number, an array) is replaced whole. ``Origins`` answers, for any key,
the file its value came from, so a problem is reported in the file that holds it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from supervisord_lite.core.locate import KeyPath
from supervisord_lite.core.paths import LOCAL_SUFFIX, local_name  # noqa: F401 (the rule lives with the other file names)


class Origins:
    """The file each key path of a merged document came from: the last file that set it."""

    def __init__(self, main: str) -> None:
        self.main = main
        self._file: dict[KeyPath, str] = {}

    def set(self, path: KeyPath, file: str) -> None:
        self._file[path] = file

    def file_of(self, path: KeyPath) -> str:
        """The file of ``path``, or else of its closest enclosing key that a file set."""
        for n in range(len(path), 0, -1):
            if (found := self._file.get(path[:n])) is not None:
                return found
        return self.main

    def items(self) -> Iterable[tuple[KeyPath, str]]:
        return self._file.items()


def merge_documents(documents: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], Origins]:
    """The documents (file name, data) merged in order, and where each value came from."""
    merged: dict[str, Any] = {}
    origins = Origins(documents[0][0] if documents else "")
    for file, data in documents:
        _merge_into(merged, data, (), file, origins)
    return merged, origins


def _merge_into(target: dict[str, Any], data: dict[str, Any], path: KeyPath, file: str, origins: Origins) -> None:
    for key, value in data.items():
        at = (*path, key)
        current = target.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            _merge_into(current, value, at, file, origins)
            continue
        target[key] = _copy(value)
        _record(value, at, file, origins)


def _record(value: Any, path: KeyPath, file: str, origins: Origins) -> None:
    """``path`` and every key under it come from ``file``."""
    origins.set(path, file)
    if isinstance(value, dict):
        for key, inner in value.items():
            _record(inner, (*path, key), file, origins)


def _copy(value: Any) -> Any:
    """Tables copied, so that a later merge never changes an earlier document."""
    return {key: _copy(inner) for key, inner in value.items()} if isinstance(value, dict) else value
