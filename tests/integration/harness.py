"""A test platform: a manifest in a temp folder, the real `svc` CLI, and cleanup.

Every service in these tests is ``python -m supervisord_lite.demo`` (the shipped
stand-in) with options, on ports the OS gave us. Cleanup stops the daemon and then
kills, by pid, anything still running whose working directory is the test's folder
(every service's cwd is the manifest folder), so no test leaks a process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import tomli_w

from tests.conftest import free_ports, wait_until

SVC = [sys.executable, "-m", "supervisord_lite"]
DEMO = "python -m supervisord_lite.demo"


@dataclass
class Platform:
    root: Path
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    tiers: dict[str, dict[str, Any]] = field(default_factory=lambda: {"infra": {"order": 0}, "app": {"order": 1}, "web": {"order": 2}})
    supervisor: dict[str, Any] = field(default_factory=dict)

    @property
    def manifest(self) -> Path:
        return self.root / "svc.toml"

    @property
    def records(self) -> Path:
        return self.root / "records.jsonl"

    @property
    def state_dir(self) -> Path:
        return self.root / ".svc"

    def add(self, name: str, *, tier: str = "app", port: int | None | bool = True, args: str = "", **keys: Any) -> int | None:
        """Add a demo service; port=True asks the OS for a free one that no service of this
        platform has (the OS may hand out a port again once the socket that held it closed)."""
        if port is True:
            port = self.free_port()
        command = f"{DEMO} --record {self.records}" + (" --port {port}" if port else " --no-port") + (f" {args}" if args else "")
        table: dict[str, Any] = {"tier": tier, "command": command, **keys}
        if port:
            table["port"] = port
        self.services[name] = table
        return port or None

    def free_port(self) -> int:
        """A free port that no service of this platform has (the OS may hand out a port
        again once the socket that held it closed)."""
        taken = {table.get("port") for table in self.services.values()}
        return next(p for p in free_ports(len(taken) + 1) if p not in taken)

    def write(self) -> Path:
        doc = {
            "supervisor": {"name": "test", "state_dir": ".svc", "metrics": "", "probe_interval": "200ms", **self.supervisor},
            "tiers": self.tiers,
            "services": self.services,
        }
        tmp = self.manifest.with_suffix(".tmp")  # atomically, as a careful editor does: a
        tmp.write_text(tomli_w.dumps(doc))  # reload must never see half a file
        os.replace(tmp, self.manifest)
        return self.manifest

    def svc(self, *args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*SVC, *args[:1], "--manifest", str(self.manifest), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"svc {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def status(self) -> dict[str, dict[str, Any]]:
        result = self.svc("status", "--json", check=True)
        return {s["name"]: s for s in json.loads(result.stdout)["services"]}

    def daemon_pid(self) -> int | None:
        try:
            return int((self.state_dir / "daemon.lock").read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def wait_state(self, name: str, state: str, timeout: float = 15) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            s = self.status()[name]
            return s if s["state"] == state else None

        return wait_until(check, timeout=timeout, interval=0.05, what=f"{name} to be {state}")  # type: ignore[return-value]

    def events(self, event: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        if not self.records.exists():
            return []
        out = []
        for line in self.records.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if (event is None or rec.get("event") == event) and (name is None or rec.get("name") == name):
                out.append(rec)
        return out

    def our_processes(self) -> list[psutil.Process]:
        """Every live process whose cwd is this platform's folder (our services)."""
        found = []
        me = os.getpid()
        for proc in psutil.process_iter(["pid", "cwd", "status"]):
            try:
                if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                cwd = proc.info["cwd"]
                if cwd and (cwd == str(self.root) or cwd.startswith(str(self.root) + os.sep)):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def cleanup(self) -> None:
        pid = self.daemon_pid()
        if pid and psutil.pid_exists(pid):
            try:
                self.svc("shutdown", "--timeout", "20", timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.our_processes():
            try:
                proc.kill()
            except psutil.Error:
                pass


def port_accepts(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def gone(pid: int) -> bool:
    """Dead, or a zombie nobody reaps (an orphan's parent here may be a non-reaping init)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = 10) -> None:
    wait_until(lambda: all(gone(pid) for pid in pids), timeout=timeout, what=f"pids {pids} to exit")


def first(events: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any] = lambda r: r["time"]) -> float:
    return min(key(r) for r in events)


@contextlib.contextmanager
def platform_other_users_can_enter(prefix: str) -> Iterator[Platform]:
    """A platform in a fresh /tmp folder of mode 0755 (pytest's tmp folders are 0700), for
    tests where another user must reach it: PostgreSQL as `postgres`, a stranger's client."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(folder, 0o755)
    p = Platform(folder)
    try:
        yield p
    finally:
        p.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
