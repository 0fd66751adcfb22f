"""Reading a service's log files as the daemon rotates them, for `svc logs` and `svc up --attach`.

The daemon appends to ``NAME.log`` and, at ``log_max_bytes``, renames it to
``NAME.log.1`` (the older ones move up to ``.2`` ... ``.N``) and starts a new file;
with no backups it truncates the file instead. ``LogSource`` holds the current file
open from the moment it is created: what is in it then is the history (read back
across the rotated files for ``-n`` and ``--since``); what is appended later comes
from ``poll`` (``tail -F``: the old file is read to its end before the new one is
opened, and a file truncated in place, known by its size or its first bytes, is read
again from its start).

Lines are split on ``\\n`` only (a form feed or ``\\r`` inside a line stays in it)
and decoded as UTF-8, an undecodable byte shown as U+FFFD.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

BLOCK = 64 * 1024
#: At most this much of one file is read by one ``poll``, so one flooding service
#: cannot keep the others' lines waiting.
POLL_LIMIT = 1024 * 1024
#: A line starts with a timestamp to the millisecond: this many first bytes tell two files apart.
HEAD_BYTES = 64


def logged_services(logs_dir: Path) -> list[str]:
    """The names of the services that have a log file in ``logs_dir`` (``NAME.log``), sorted."""
    try:
        entries = list(os.scandir(logs_dir))
    except OSError:
        return []
    names = []
    for entry in entries:
        if entry.name.endswith(".log") and len(entry.name) > len(".log"):
            try:
                if entry.is_file(follow_symlinks=False):
                    names.append(entry.name[: -len(".log")])
            except OSError:
                continue
    return sorted(names)


def rotated_files(path: Path) -> list[Path]:
    """``NAME.log.N`` ... ``NAME.log.1`` that exist, oldest first (without ``NAME.log``)."""
    found = []
    i = 1
    while True:
        candidate = path.with_name(f"{path.name}.{i}")
        if not candidate.is_file():
            break
        found.append(candidate)
        i += 1
    return found[::-1]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _lines_forward(fd: int, start: int, end: int) -> Iterator[str]:
    """The lines between byte offsets ``start`` and ``end`` of ``fd``."""
    partial = b""
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(BLOCK, end - pos), pos)
        if not chunk:
            break
        pos += len(chunk)
        pieces = (partial + chunk).split(b"\n")
        partial = pieces.pop()
        for piece in pieces:
            yield _decode(piece)
    if partial:
        yield _decode(partial)


def _last_lines(fd: int, end: int, n: int) -> list[str]:
    """The last ``n`` lines before byte offset ``end`` of ``fd``, reading backwards."""
    if n <= 0 or end <= 0:
        return []
    data = b""
    pos = end
    while pos > 0 and data.count(b"\n") <= n:
        step = min(BLOCK, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data
    if data.endswith(b"\n"):
        data = data[:-1]
    pieces = data.split(b"\n")
    if pos > 0:
        pieces = pieces[1:]  # the first piece may be cut
    return [_decode(piece) for piece in pieces[-n:]]


def _first_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return _decode(f.readline(BLOCK).rstrip(b"\n"))
    except OSError:
        return ""


class LogSource:
    """One service's log: its history up to now, then what is appended (rotation-safe).

    The file may not exist yet (a service that has not started): ``poll`` picks it up
    once it appears.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._inode: int | None = None
        self._pos = 0  # where the next poll reads from
        self._partial = b""
        self._head = b""  # the file's first bytes: a file started afresh in place begins otherwise
        self._history_end = 0
        if self._open():
            self._pos = self._history_end = self._complete_end()
            self._head = os.pread(self._fd, HEAD_BYTES, 0)

    # -- history ------------------------------------------------------------

    def tail(self, n: int) -> list[str]:
        """The last ``n`` lines written before this source was made, across rotated files."""
        if n <= 0:
            return []
        lines = _last_lines(self._fd, self._history_end, n) if self._fd is not None else []
        for older in reversed(rotated_files(self.path)):
            if len(lines) >= n:
                break
            try:
                fd = os.open(older, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                break
            try:
                lines = _last_lines(fd, os.fstat(fd).st_size, n - len(lines)) + lines
            finally:
                os.close(fd)
        return lines

    def history(self, starts_before: Callable[[str], bool] | None = None) -> Iterator[str]:
        """Every line written before this source was made, oldest first.

        :param starts_before: given a file's first line, True when the lines wanted all
            come after it: the rotated files older than that one are not read
        """
        older: list[Path] = []
        if starts_before is None or self._fd is None or not starts_before(self._first_current_line()):
            for candidate in reversed(rotated_files(self.path)):
                older.insert(0, candidate)
                if starts_before is not None and starts_before(_first_line(candidate)):
                    break
        for candidate in older:
            try:
                fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                yield from _lines_forward(fd, 0, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        if self._fd is not None:
            yield from _lines_forward(self._fd, 0, self._history_end)

    def _first_current_line(self) -> str:
        assert self._fd is not None
        return next(_lines_forward(self._fd, 0, min(self._history_end, BLOCK)), "")

    # -- following ----------------------------------------------------------

    def poll(self) -> list[str]:
        """The complete lines appended since the last call (or since this source was made)."""
        if self._fd is None:
            if not self._open():
                return []
            self._pos = 0
        try:
            st = os.stat(self.path)
        except OSError:
            st = None  # between a rotation's rename and the next write: drain the old file
        if st is not None and st.st_ino == self._inode and self._truncated(st.st_size):
            self._pos, self._partial, self._head = 0, b"", b""
        lines, complete = self._drain()
        if not complete:
            return lines  # more to read: the next poll goes on before looking for a rotation
        if st is not None and st.st_ino != self._inode:
            # rotated: the old file is complete (the daemon closes it before the rename) and
            # what it had left is read above; then the files rotated after it, if it rotated
            # more than once since the last poll, and the new file, each from its start
            if self._partial:
                lines.append(_decode(self._partial))
                self._partial = b""
            between = self._rotated_since()
            self._close()
            for path in between:
                lines += self._whole(path)
            if self._open():
                self._pos = 0
                lines += self._drain()[0]
        return lines

    def _rotated_since(self) -> list[Path]:
        """The rotated files newer than the one being read, oldest first (every one of them
        when it is gone: only the oldest is ever deleted)."""
        files = rotated_files(self.path)
        for i, path in enumerate(files):
            try:
                if os.stat(path).st_ino == self._inode:
                    return files[i + 1:]
            except OSError:
                continue
        return files

    @staticmethod
    def _whole(path: Path) -> list[str]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return []
        try:
            return list(_lines_forward(fd, 0, os.fstat(fd).st_size))
        finally:
            os.close(fd)

    def _truncated(self, size: int) -> bool:
        """Started afresh in place (rotation without backups): shorter than what was read, or
        (when it grew back meanwhile) beginning with other bytes than it did."""
        assert self._fd is not None
        return size < self._pos or (bool(self._head) and os.pread(self._fd, len(self._head), 0) != self._head)

    def _drain(self) -> tuple[list[str], bool]:
        """The complete lines from where the last read stopped (at most POLL_LIMIT bytes),
        and whether the end of the file was reached."""
        assert self._fd is not None
        chunks: list[bytes] = []
        size = 0
        at_end = False
        while size < POLL_LIMIT:
            chunk = os.pread(self._fd, BLOCK, self._pos)
            if not chunk:
                at_end = True
                break
            self._pos += len(chunk)
            size += len(chunk)
            chunks.append(chunk)
        if not chunks:
            return [], at_end
        if not self._head:
            self._head = os.pread(self._fd, HEAD_BYTES, 0)
        pieces = (self._partial + b"".join(chunks)).split(b"\n")
        self._partial = pieces.pop()
        return [_decode(piece) for piece in pieces], at_end

    # -- the file -----------------------------------------------------------

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        self._fd, self._inode, self._head = fd, os.fstat(fd).st_ino, b""
        return True

    def _complete_end(self) -> int:
        """The end of the last complete line: a line being written belongs to what follows."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        pos = size
        while pos > 0:
            step = min(BLOCK, pos)
            chunk = os.pread(self._fd, step, pos - step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                return pos - step + newline + 1
            pos -= step
        return 0

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._close()

    def __enter__(self) -> LogSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
