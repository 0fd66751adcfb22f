"""Starting a service: its command in a new session, its output pumped into its log.

The child runs in its own session with the environment and user of
``runtime.environment``; stdout and stderr share one pipe, cut into lines (long lines
in pieces, a partial line flushed after a pause) and written to the service's log.
"""

from __future__ import annotations

import asyncio
import codecs
import errno
import functools
import math
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio
import anyio.abc

from supervisord_lite.core.model import ServiceSpec
from supervisord_lite.host.fdlimit import DESCRIPTORS_PER_SERVICE, soft_limit
from supervisord_lite.host.proctable import create_time as proc_create_time
from supervisord_lite.runtime.environment import SpawnError, service_environment, user_kwargs
from supervisord_lite.runtime.logs import ServiceLog, get_logger
from supervisord_lite.runtime.service_process import ServiceProcess
from supervisord_lite.runtime.spawner import current_spawner

__all__ = ["MAX_LINE_CHARS", "SpawnError", "spawn"]

MAX_LINE_CHARS = 16 * 1024  # a longer line without a newline is cut into pieces of this size
PARTIAL_LINE_FLUSH = 0.5  # seconds a partial line (no newline yet) waits before it is logged anyway
_READS_PER_CALLBACK = 16  # pipe reads of 64 KiB in one callback, then other callbacks get their turn

_log = get_logger(component="process")


async def spawn(
    spec: ServiceSpec,
    *,
    instance_id: str,
    log: ServiceLog,
    task_group: anyio.abc.TaskGroup,
    on_line: Callable[[str], None] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> ServiceProcess:
    """Start ``spec``'s command in a new session with its environment, cwd and user.

    stdout and stderr go through one pipe into ``log`` (and ``on_line``, called with each
    line without timestamp), pumped by a reader callback of the event loop (by a task in
    ``task_group`` on a loop other than asyncio's).

    :raises SpawnError: the command, cwd, env_file or user is unusable; the message
        names the service, the command and the OS error
    """
    name = spec.name
    if not spec.command:
        raise SpawnError(f"{name}: the command (key 'command') is empty")
    argv = list(spec.command)
    cwd = Path(spec.cwd)
    if not cwd.is_dir():
        what = "is not a directory" if cwd.exists() else "does not exist"
        raise SpawnError(f"{name}: working directory {str(cwd)!r} (key 'cwd') {what}")
    env = service_environment(spec, instance_id=instance_id, extra_env=extra_env)
    privileges = user_kwargs(spec)
    try:
        process = await _open_process(argv, cwd=cwd, env=env, privileges=privileges)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.filename is not None and os.fspath(exc.filename) == os.fspath(cwd):
            raise SpawnError(f"{name}: cannot enter working directory {str(cwd)!r} (key 'cwd'): {reason}") from None
        hint = ""
        if exc.errno == errno.ENOENT and "/" not in argv[0]:
            hint = " (not found on PATH)"
        elif exc.errno == errno.ENOENT and (cwd / argv[0]).is_file():
            hint = " (the file exists: is the interpreter on its #! line missing?)"
        elif exc.errno == errno.ENOEXEC:
            hint = " (a script without a #! line?)"
        elif exc.errno == errno.EPERM and privileges:
            hint = f" (switching to user {spec.user!r})"
        elif exc.errno == errno.EMFILE:
            hint = (f" (the daemon has used up its open-file limit of {soft_limit()}: each running service holds "
                    f"{DESCRIPTORS_PER_SERVICE}; raise LimitNOFILE= in the systemd unit, or `ulimit -n` where it starts)")
        raise SpawnError(f"{name}: cannot run {argv[0]!r}: {reason}{hint}") from None
    started_at = time.time()
    create_time = proc_create_time(process.pid) or started_at  # one stat read: psutil.Process costs three
    svc = ServiceProcess(
        name=name,
        instance_id=instance_id,
        pid=process.pid,
        pgid=process.pid,
        create_time=create_time,
        started_at=started_at,
        process=process,
        log=log,
        env=env,
    )
    _start_pump(process.stdout, log, on_line, svc, task_group)
    return svc


def _start_pump(
    stream: _PipeReader,
    log: ServiceLog,
    on_line: Callable[[str], None] | None,
    svc: ServiceProcess,
    task_group: anyio.abc.TaskGroup,
) -> None:
    """Log the child's output: through a reader callback on asyncio's loop (no task per
    service), else through a task in ``task_group``."""
    try:
        loop = asyncio.get_running_loop()  # only asyncio's (anyio's asyncio backend) runs here
    except RuntimeError:
        loop = None
    if loop is not None:
        fd, stream.fd = stream.fd, -1  # the pump owns the descriptor from now on
        svc.attach_output(_OutputPump(loop, fd, log, on_line, svc.output_finished))
        return
    task_group.start_soon(_pump, stream, log, on_line, svc.output_finished, name=f"pump {svc.name}")


class _PipeReader:
    """The read end of a child's output pipe, read without blocking the event loop."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            if self.fd < 0:
                raise anyio.ClosedResourceError
            try:
                data = os.read(self.fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self.fd)
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def aclose(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            anyio.notify_closing(fd)
            os.close(fd)


class _SpawnedProcess:
    """A child started by ``subprocess.Popen`` in a worker thread, awaited through a pidfd.

    Why not ``anyio.open_process``: starting a program blocks the caller until the
    child has exec'd, a few milliseconds per Python service under load, and doing
    that on the event loop for 200 services at once stalls every probe and every
    readiness check behind it. ``fork_exec`` releases the GIL, so from a thread the
    loop keeps running; and a pidfd (Linux 5.3+) makes the exit an ordinary readable
    file descriptor, with no watcher thread per child.
    """

    def __init__(self, popen: subprocess.Popen[bytes], stdout_fd: int) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdout = _PipeReader(stdout_fd)

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        while self._popen.returncode is None:
            try:
                pidfd = os.pidfd_open(self.pid)
            except (AttributeError, OSError):  # no pidfd: poll
                if self._popen.poll() is None:
                    await anyio.sleep(0.05)
                continue
            try:
                await anyio.wait_readable(pidfd)
            finally:
                anyio.notify_closing(pidfd)
                os.close(pidfd)
            self._popen.poll()
        return self._popen.returncode


async def _open_process(argv: list[str], *, cwd: Path, env: dict[str, str], privileges: dict[str, object]) -> _SpawnedProcess:
    """Start ``argv`` in its own session, stdout and stderr into one pipe, as the user ``privileges`` name."""
    read_fd, write_fd = os.pipe()
    try:
        popen = await current_spawner().run(
            functools.partial(
                subprocess.Popen,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
                **privileges,  # type: ignore[arg-type]
            )
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return _SpawnedProcess(popen, read_fd)


class _OutputPump:
    """Pipe -> lines -> log (+ on_line), driven by the event loop's reader callback.

    No task per service: the loop calls ``_readable`` when the pipe has data, so a
    quiet service costs this object and one registered descriptor. Lines longer than
    MAX_LINE_CHARS are split; a partial line is logged after PARTIAL_LINE_FLUSH seconds
    without more output. ``on_closed`` is called once everything read is logged (end
    of output, or ``close``)."""

    __slots__ = ("_callback_failed", "_decoder", "_fd", "_flush_timer", "_loop", "_log", "_on_closed", "_on_line", "_pending")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        log: ServiceLog,
        on_line: Callable[[str], None] | None,
        on_closed: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._log = log
        self._on_line = on_line
        self._on_closed = on_closed
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._flush_timer: asyncio.TimerHandle | None = None
        self._callback_failed = False
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        for _ in range(_READS_PER_CALLBACK):  # a chatty service must not starve the loop
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.close()
                return
            self._take(chunk)
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._pending:
            self._flush_timer = self._loop.call_later(PARTIAL_LINE_FLUSH, self._flush_partial)

    def _take(self, chunk: bytes) -> None:
        text = self._pending + self._decoder.decode(chunk)
        lines = text.split("\n")
        pending = lines.pop()
        while len(pending) > MAX_LINE_CHARS:
            lines.append(pending[:MAX_LINE_CHARS])
            pending = pending[MAX_LINE_CHARS:]
        self._pending = pending
        if any(len(line) > MAX_LINE_CHARS for line in lines):
            lines = [piece for line in lines for piece in _cut(line)]
        if lines:
            self._emit(lines)

    def _flush_partial(self) -> None:
        """Quiet for a while with a partial line: log it as it is."""
        self._flush_timer = None
        if self._pending:
            self._emit([self._pending])
            self._pending = ""

    def _emit(self, lines: list[str]) -> None:
        self._log.write_lines(lines)
        if self._on_line is not None:
            for line in lines:
                try:
                    self._on_line(line)
                except Exception:
                    if not self._callback_failed:
                        self._callback_failed = True
                        _log.exception("on_line callback failed; later failures are not logged")

    def close(self) -> None:
        """Stop reading (end of output, or nobody supervises the service any more): log
        what is left and close the pipe. Safe to call again."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        self._loop.remove_reader(fd)
        os.close(fd)
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        try:
            rest = self._pending + self._decoder.decode(b"", final=True)
            self._pending = ""
            if rest:
                self._emit(_cut(rest))
        finally:
            self._on_closed()


async def _pump(
    stream: _PipeReader,
    log: ServiceLog,
    on_line: Callable[[str], None] | None,
    closed: Callable[[], None],
) -> None:
    """The task version of ``_OutputPump``, for an event loop other than asyncio's."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    callback_failed = False

    def emit(lines: list[str]) -> None:
        nonlocal callback_failed
        log.write_lines(lines)
        if on_line is not None:
            for line in lines:
                try:
                    on_line(line)
                except Exception:
                    if not callback_failed:
                        callback_failed = True
                        _log.exception("on_line callback failed; later failures are not logged")

    try:
        while True:
            chunk = b""
            with anyio.move_on_after(PARTIAL_LINE_FLUSH if pending else math.inf):
                try:
                    chunk = await stream.receive(65536)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
            if not chunk:  # quiet for a while with a partial line: log it as it is
                if pending:
                    emit([pending])
                    pending = ""
                continue
            text = pending + decoder.decode(chunk)
            lines = text.split("\n")
            pending = lines.pop()
            while len(pending) > MAX_LINE_CHARS:
                lines.append(pending[:MAX_LINE_CHARS])
                pending = pending[MAX_LINE_CHARS:]
            if any(len(line) > MAX_LINE_CHARS for line in lines):
                lines = [piece for line in lines for piece in _cut(line)]
            if lines:
                emit(lines)
        rest = pending + decoder.decode(b"", final=True)
        if rest:
            emit(_cut(rest))
    finally:
        closed()
        with anyio.CancelScope(shield=True):
            await stream.aclose()


def _cut(line: str) -> list[str]:
    """A line in pieces of at most MAX_LINE_CHARS (an empty line stays one empty line)."""
    if len(line) <= MAX_LINE_CHARS:
        return [line]
    return [line[i : i + MAX_LINE_CHARS] for i in range(0, len(line), MAX_LINE_CHARS)]
