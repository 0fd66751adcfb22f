"""Where the daemon's own log lines go when their stream fails.

The daemon logs to stderr: ``state_dir/daemon.log`` when ``svc up`` started it, the
journal under systemd. A full disk or an I/O error there must not end the daemon
(an exception from a log call can surface anywhere, and a daemon that ends orphans
every service), so ``FallbackSink`` never raises: a line stderr does not take goes
to syslog instead (``/dev/log``, the journal under systemd), sent without waiting,
and is dropped when syslog is not there either. Each write tries stderr first, so
the log comes back on its own once there is space; its first line then says how
many lines went elsewhere and why.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

SYSLOG_PATH = "/dev/log"
#: daemon facility (3), warning severity (4): a line that missed its own log is worth a look
SYSLOG_PRIORITY = 3 * 8 + 4
SYSLOG_IDENT = "svc-daemon"


class FallbackSink:
    """A text stream for the daemon's log lines: ``target()`` (stderr) first, then syslog.

    :param target: returns the stream to write to, looked up at every write (tests swap stderr)
    :param syslog_path: the syslog socket tried when the target fails
    """

    def __init__(self, target: Callable[[], Any], syslog_path: str = SYSLOG_PATH) -> None:
        self._target = target
        self._syslog_path = syslog_path
        self._syslog: socket.socket | None = None
        self._lock = threading.Lock()
        self.failure: OSError | ValueError | None = None  # why the target last failed, until it works again
        self.diverted = 0  # lines sent to syslog instead, since the target failed
        self.lost = 0  # lines that reached neither

    def write(self, text: str) -> int:
        with self._lock:
            try:
                if self.failure is not None:
                    self._write_target(self._note(text))
                self._write_target(text)
            except (OSError, ValueError) as exc:  # ValueError: a closed stream
                self._divert(text, exc)
            else:
                self.failure, self.diverted, self.lost = None, 0, 0
        return len(text)

    def flush(self) -> None:
        """Every write is written through already."""

    def close(self) -> None:
        """Close the syslog socket (the target is not ours to close)."""
        with self._lock:
            if self._syslog is not None:
                self._syslog.close()
                self._syslog = None

    # -- the target ------------------------------------------------------------

    def _write_target(self, text: str) -> None:
        stream = self._target()
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            stream.write(text)
            stream.flush()
            return
        # straight to the descriptor: a failed write leaves nothing in a buffer to fail again
        view = memoryview(text.encode("utf-8", errors="replace"))
        while view:
            view = view[os.write(fd, view) :]

    def _note(self, text: str) -> str:
        """The line that says what happened while the target failed, in the format of ``text``."""
        reason = f"{type(self.failure).__name__}: {self.failure}"
        event = (
            f"{self.diverted + self.lost} log lines could not be written here ({reason}); "
            f"{self.diverted} went to syslog, {self.lost} were lost"
        )
        if text.startswith("{"):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
            return json.dumps({"event": event, "level": "warning", "timestamp": stamp}) + "\n"
        return f"[warning  ] {event}\n"

    # -- syslog ----------------------------------------------------------------

    def _divert(self, text: str, exc: OSError | ValueError) -> None:
        if self.failure is None:
            self.failure = exc
            self._send_syslog(f"cannot write the daemon log to stderr ({type(exc).__name__}: {exc}); logging here until it works again")
        if self._send_syslog(text.rstrip("\n")):
            self.diverted += 1
        else:
            self.lost += 1

    def _send_syslog(self, line: str) -> bool:
        message = f"<{SYSLOG_PRIORITY}>{SYSLOG_IDENT}[{os.getpid()}]: {line}".encode("utf-8", errors="replace")
        try:
            if self._syslog is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)  # a busy journal drops the line; it never stalls the daemon
                try:
                    sock.connect(self._syslog_path)
                except OSError:
                    sock.close()
                    raise
                self._syslog = sock
            self._syslog.send(message[:65000])
            return True
        except OSError:
            if self._syslog is not None:
                self._syslog.close()
                self._syslog = None
            return False
