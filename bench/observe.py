"""What the bench watches from outside: ports, processes, CPU/RSS, and cleanup.

Ports are read from the kernel's listening sockets (one sock_diag dump for all of
them, via supervisord_lite.host.portinfo) rather than by N connects, so the observer
loads the machine as little as possible while it times the thing under test. A
port in LISTEN on 127.0.0.1 is a port a connect() succeeds on. (Not /proc/net/tcp:
the kernel writes that by walking every connection slot, ~10 ms a read on a 24 GiB
machine; polled every 5 ms, the observer took two thirds of a core from the runner.)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import psutil

from supervisord_lite.host.portinfo import listening_sockets

T = TypeVar("T")

#: Environment variable set on everything the bench starts; its value is the run id.
MARKER = "SVC_BENCH_RUN"


class BenchTimeout(Exception):
    pass


def poll(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.005) -> T:
    """Call ``predicate`` until it returns something truthy; BenchTimeout after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchTimeout(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def all_listening(ports: Iterable[int]) -> Callable[[], bool]:
    wanted = set(ports)
    return lambda: wanted <= listening_sockets().keys()


def none_listening(ports: Iterable[int]) -> Callable[[], bool]:
    wanted = set(ports)
    return lambda: not (wanted & listening_sockets().keys())


def socket_inodes(port: int) -> set[int]:
    return listening_sockets().get(port, set())


def gone(pid: int) -> bool:
    """Dead, or a zombie (dead but not reaped: an orphan under a non-reaping init)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def all_gone(pids: Iterable[int]) -> Callable[[], bool]:
    wanted = list(pids)
    return lambda: all(gone(p) for p in wanted)


def cpu_seconds(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


@dataclass
class Procs:
    """Every process the bench starts goes through here, so it can all be undone.

    Commands run in their own session (a Ctrl-C at the terminal reaches only the
    bench, which then cleans up) with ``MARKER=run_id`` in their environment.
    Supervisor daemons detach and their services are their children, so cleanup
    also sweeps every process of ours whose environment carries the marker: only
    processes this run started, wherever they ended up in the tree.
    """

    run_id: str
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The bench's environment for a command: marked, and with bytecode caching on as
        in an installed package (PYTHONDONTWRITEBYTECODE would recompile every module
        at every start and bill the compiler to the supervisor)."""
        base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return {**base, MARKER: self.run_id, **(extra or {})}

    def popen(self, argv: list[str], *, log: str | os.PathLike[str] | None = None,
              env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (closed below)
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 env=self.env(env), cwd=cwd, start_new_session=True)
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self.started.append(p)
        return p

    def run(self, argv: list[str], timeout: float, **kw: object) -> int:
        """Run a command to its end (its whole group is killed on timeout)."""
        p = self.popen(argv, **kw)  # type: ignore[arg-type]
        return wait(p, timeout, " ".join(argv[:3]))

    def marked(self) -> list[psutil.Process]:
        found = []
        me = os.getpid()
        for proc in psutil.process_iter(["pid"]):
            if proc.pid == me:
                continue
            try:
                if proc.environ().get(MARKER) == self.run_id and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
                continue
        return found

    def cleanup(self) -> int:
        """SIGKILL everything this run started. Returns how many were still alive."""
        killed = 0
        for p in self.started:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                    killed += 1
                except (ProcessLookupError, PermissionError):
                    pass
        for _ in range(5):  # supervisors first die, then their services can no longer respawn
            left = self.marked()
            if not left:
                break
            for proc in left:
                try:
                    proc.kill()
                    killed += 1
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(left, timeout=2)
        for p in self.started:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.started.clear()
        return killed


def _exited_within(p: subprocess.Popen[bytes], timeout: float) -> bool:
    """Block until ``p`` exits or ``timeout`` passes, woken by the exit itself: Popen.wait
    with a timeout polls with sleeps of up to 50 ms, which would round every timed
    command up to the next 50 ms."""
    try:
        fd = os.pidfd_open(p.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel) or already reaped: Popen's own wait
        try:
            p.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def wait(p: subprocess.Popen[bytes], timeout: float, what: str) -> int:
    try:
        if not _exited_within(p, timeout):
            raise subprocess.TimeoutExpired(p.args, timeout)
        return p.wait()
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        raise BenchTimeout(f"{what} did not finish within {timeout:g}s") from None


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    """Median wall time of ``fn`` over ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
