"""The daemon's long-lived helper tasks, and what keeps them alive.

Signals, the systemd watchdog and status line, and the control socket run beside
the supervisor in the daemon's task group; a failure in any of them would end that
group, and the daemon with it, orphaning every service. So each runs under
``keep_running`` (or ``serve_control``): a failure is logged with its traceback and
the task starts again after a pause that doubles up to RESTART_MAX.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog

from supervisord_lite.core import protocol
from supervisord_lite.daemon import control_server, sdnotify
from supervisord_lite.host.malloc import malloc_trim

if TYPE_CHECKING:
    from supervisord_lite.daemon.main import Daemon
    from supervisord_lite.runtime.supervisor import Supervisor

log = structlog.get_logger("daemon")

#: The first wait before a failed helper task runs again; it doubles up to RESTART_MAX.
RESTART_FIRST, RESTART_MAX = 1.0, 30.0


async def keep_running(what: str, task: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Run a helper task for the daemon's lifetime: a failure is logged and the task
    starts again after a pause, instead of ending the daemon's task group."""
    pause = RESTART_FIRST
    while True:
        try:
            await task(*args)
            return
        except Exception:
            log.exception("daemon task failed; starting it again", task=what, retry_in=pause)
        await anyio.sleep(pause)
        pause = min(pause * 2, RESTART_MAX)


class _StartedOnce:
    """Passes the control server's first ``started()`` on to the task group, not later ones."""

    def __init__(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        self.task_status = task_status
        self.done = False

    def started(self, value: None = None) -> None:
        if not self.done:
            self.done = True
            self.task_status.started()


async def serve_control(sock_path: Path, daemon: Daemon, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """The control socket for the daemon's lifetime. A failure before it first listens
    ends the start (a clear error); a failure afterwards is logged and it listens again."""
    status = _StartedOnce(task_status)
    pause = RESTART_FIRST
    while True:
        try:
            await control_server.serve(sock_path, daemon, task_status=status, on_error=lambda m: log.error(m))
            return
        except Exception:
            if not status.done:
                raise
            log.exception("the control socket failed; listening again", retry_in=pause)
        await anyio.sleep(pause)
        pause = min(pause * 2, RESTART_MAX)


async def handle_signals(daemon: Daemon, tg: anyio.abc.TaskGroup) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: reloading the manifest")
                tg.start_soon(_reload_on_signal, daemon)  # SIGTERM is still heard while a reload stops services
            else:
                log.info("signal: shutting down", signal=signal.Signals(signum).name)
                daemon.shutdown_requested.set()


async def _reload_on_signal(daemon: Daemon) -> None:
    try:
        await daemon.reload()
    except protocol.ControlError:
        pass  # logged and counted by reload; the running manifest stays
    except Exception:
        log.exception("SIGHUP reload failed; the running manifest stays")


async def watchdog() -> None:
    interval = sdnotify.watchdog_interval()
    if not interval:
        return
    while True:
        sdnotify.notify("WATCHDOG=1")
        await anyio.sleep(interval / 2)


#: Seconds without a change before freed memory is handed back to the system.
QUIET_BEFORE_TRIM = 3.0


async def trim_after_bursts(sup: Supervisor, quiet: float = QUIET_BEFORE_TRIM) -> None:
    """Hand memory freed by a burst of work back to the system once things are quiet.

    The start (reading and rewriting the machine registry, several MB of JSON on a busy
    machine) and every `up` or reload leave freed blocks in the C heap that the
    process keeps; ``malloc_trim`` returns them. Once after the start, then once after
    each burst of changes, never while nothing changes."""
    trim = malloc_trim()
    if trim is None:
        return
    while True:
        while True:  # until `quiet` seconds pass without a change
            changed = sup.next_change()
            with anyio.move_on_after(quiet):
                await changed.wait()
                continue
            break
        trim(0)
        await sup.next_change().wait()


async def status_lines(sup: Supervisor) -> None:
    """Keep systemd's STATUS= line current (`systemctl status` shows it)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    last = ""
    while True:
        changed = sup.next_change()
        counts: dict[str, int] = {}
        for s in sup.snapshot().services:
            counts[s.state.value] = counts.get(s.state.value, 0) + 1
        line = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        if line != last:
            sdnotify.notify(f"STATUS={line}")
            last = line
        await changed.wait()
        await anyio.sleep(0.5)  # coalesce bursts of changes into one line
