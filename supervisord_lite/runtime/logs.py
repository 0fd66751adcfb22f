"""Where output goes: each service's own log file, and the daemon's structured log.

``ServiceLog`` is the file ``state_dir/logs/NAME.log`` a service's stdout and stderr
are pumped into: every line gets a UTC timestamp with milliseconds, the file is
rotated by size (``NAME.log`` -> ``NAME.log.1`` ... ``NAME.log.N``), and the last
lines stay in memory for failure reports. It never raises into the output pump:
a write error (disk full, permissions) is reported once through ``on_error`` and
lines are dropped until a write succeeds again.

``configure_logging`` sets up structlog for the daemon itself: JSON lines when
stderr is not a terminal, a console renderer otherwise, written through a
``FallbackSink`` (syslog when stderr fails), so a log call never raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from supervisord_lite.host import statedir
from supervisord_lite.runtime.logsink import FallbackSink

__all__ = ["ServiceLog", "configure_logging", "format_timestamp", "get_logger"]

MARK_PREFIX = "--- svc: "
MARK_SUFFIX = " ---"


_second_stamp: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def format_timestamp(t: float) -> str:
    """``2026-11-25T23:59:01.123Z`` for unix time ``t`` (UTC, milliseconds).

    The seconds part is formatted once per second: a `down` of 1000 services writes
    three marks each within the same few seconds."""
    global _second_stamp
    second, ms = divmod(int(t * 1000), 1000)
    if _second_stamp[0] != second:
        _second_stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_stamp[1]}.{ms:03d}Z"


class ServiceLog:
    """One service's output log: timestamped lines, rotated by size, tail in memory.

    :param path: the log file, opened relative to its folder without following a link,
        created 0600 (its folder 0700 when missing; see ``host.statedir``)
    :param max_bytes: rotate before the file would grow past this; 0 turns rotation off
    :param backups: how many rotated files to keep (``NAME.log.1`` is the newest);
        0 means the file is simply started afresh
    :param tail_lines: how many lines ``tail()`` can return
    :param on_error: called with the exception the first time a write fails, and
        again only after a write has succeeded in between
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        backups: int,
        tail_lines: int = 200,
        on_error: Callable[[OSError], None] | None = None,
    ) -> None:
        self.path = path if isinstance(path, Path) else Path(path)
        self.max_bytes = max_bytes
        self.backups = max(0, backups)
        self.on_error = on_error
        # a list while it holds fewer than tail_lines lines (most services say little: an
        # empty deque is ~600 bytes, a short list ~100), then a deque that drops the oldest
        self._tail_lines = max(1, tail_lines)
        self._tail: list[str] | deque[str] = []
        self._fd: int | None = None
        self._size = 0
        self._failing = False
        self._dropped = 0
        self._closed = False

    # -- public -------------------------------------------------------------

    def write(self, line: str) -> None:
        """Append one line of service output (a trailing newline is stripped)."""
        self.write_lines((line,))

    def write_lines(self, lines: Iterable[str], when: float | None = None) -> None:
        """Append several lines with one timestamp and one write (used by the pump)."""
        stamp = format_timestamp(time.time() if when is None else when)
        stamped = [f"{stamp} {line.rstrip(chr(10)).rstrip(chr(13))}" for line in lines]
        if not stamped:
            return
        self._keep(stamped)
        self._append([f"{line}\n".encode("utf-8", errors="replace") for line in stamped])

    def mark(self, text: str) -> None:
        """Write a supervisor line, e.g. ``--- svc: started pid 123 ---`` (one line: no batching)."""
        line = f"{format_timestamp(time.time())} {MARK_PREFIX}{text.rstrip(chr(10)).rstrip(chr(13))}{MARK_SUFFIX}"
        self._keep((line,))
        self._append([f"{line}\n".encode("utf-8", errors="replace")])

    def tail(self, n: int | None = None) -> list[str]:
        """The last ``n`` lines written (all kept lines when ``n`` is None), timestamped."""
        lines = list(self._tail)
        return lines if n is None else lines[-n:] if n > 0 else []

    def _keep(self, lines: Iterable[str]) -> None:
        self._tail.extend(lines)
        if isinstance(self._tail, list) and len(self._tail) > self._tail_lines:
            self._tail = deque(self._tail, maxlen=self._tail_lines)

    @property
    def failing(self) -> bool:
        """True while writes are being dropped after an error."""
        return self._failing

    def close(self) -> None:
        self._closed = True
        self._close_fd()

    # -- file handling ------------------------------------------------------

    def _append(self, lines: list[bytes]) -> None:
        """Write encoded lines, rotating between lines so no file grows past max_bytes
        (a single line longer than max_bytes gets a file of its own)."""
        if self._closed:
            return
        written_lines = 0
        try:
            fd = self._open()
            if self._failing and self._dropped:
                note = f"{format_timestamp(time.time())} {MARK_PREFIX}{self._dropped} lines dropped after a write error{MARK_SUFFIX}\n"
                lines = [note.encode(), *lines]
            batch: list[bytes] = []
            batch_size = 0
            for line in lines:
                if self.max_bytes > 0 and self._size + batch_size + len(line) > self.max_bytes and self._size + batch_size > 0:
                    if batch:
                        self._write_all(fd, b"".join(batch))
                        written_lines += len(batch)
                        batch, batch_size = [], 0
                    self._rotate()
                    fd = self._open()
                batch.append(line)
                batch_size += len(line)
            if batch:
                self._write_all(fd, b"".join(batch))
        except OSError as exc:
            self._close_fd()
            self._dropped += len(lines) - written_lines
            if not self._failing:
                self._failing = True
                if self.on_error is not None:
                    try:
                        self.on_error(exc)
                    except Exception:  # a broken callback must not break the pump
                        pass
            return
        self._failing = False
        self._dropped = 0

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
            self._size += written

    def _open(self) -> int:
        if self._fd is None:
            self._fd = statedir.open_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, create_folder=True)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _rotate(self) -> None:
        """NAME.log.(N-1) -> NAME.log.N ... NAME.log -> NAME.log.1; the oldest falls off."""
        self._close_fd()
        if self.backups == 0:
            statedir.truncate(self.path)
            return
        statedir.rotate(self.path, self.backups)


# -- the daemon's own log ------------------------------------------------------


def configure_logging(json_output: bool | None = None, level: int = logging.INFO, stream: Any = None) -> None:
    """Configure structlog for the daemon's own log.

    :param json_output: JSON lines when True, the console renderer when False; when
        None, JSON exactly when ``stream`` (default stderr) is not a terminal
    :param level: the lowest level written (INFO by default)
    :param stream: where to write (default ``sys.stderr``, looked up at each write);
        a line it cannot take (disk full, I/O error) goes to syslog instead
    """
    out = stream if stream is not None else sys.stderr
    if json_output is None:
        isatty = getattr(out, "isatty", None)
        json_output = not (isatty is not None and isatty())
    # the plain traceback explicitly: structlog picks rich's when rich is loaded, and the
    # daemon keeps rich out (daemon/__main__.py), so a traceback reads the same in every process
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if json_output:
        processors.append(structlog.processors.format_exc_info)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=FallbackSink(lambda: out if stream is not None else sys.stderr)),
        cache_logger_on_first_use=False,
    )


def get_logger(**bind: Any) -> Any:
    """A structlog logger with ``bind`` as context, e.g. ``get_logger(service="api")``.

    Lazy: a module-level logger made at import time still follows ``configure_logging``
    (a bound one would keep the console renderer it was made with)."""
    return structlog.get_logger(**bind)
