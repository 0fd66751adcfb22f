"""One runner per supervisor under test: bare loop, supervisord, PM2, circus, ours.

A runner turns a workload into that tool's configuration and drives it with the
tool's own commands. The bench times everything from outside (ports in the kernel's
table, processes through psutil); a runner only issues commands and names the
supervisor's pid(s). Commands that return before the work is done are fine: the
clock stops when the ports say so, not when the command says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import tomli_w

from observe import BenchTimeout, Procs, gone, poll, wait
from workloads import BENCH, ROOT, Workload

PEERS = BENCH / ".peers"


class RunnerError(Exception):
    pass


def tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in lines)


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.splitlines()[-1] if out else "?"


class Runner:
    key = ""
    name = ""
    #: Can express dependencies / start order (chain and demo workloads).
    ordered = False

    def __init__(self, procs: Procs, work: Path) -> None:
        self.procs = procs
        self.work = work
        self.wl: Workload | None = None
        self.dir = work
        self._up: subprocess.Popen[bytes] | None = None
        self._down: subprocess.Popen[bytes] | None = None

    # -- about the tool
    def missing(self) -> str | None:
        """Why this runner cannot run here (None: it can)."""
        return None

    def version(self) -> str:
        return ""

    @property
    def label(self) -> str:
        v = self.version()
        return f"{self.name} {v}".strip()

    # -- one workload
    def prepare(self, wl: Workload) -> None:
        self.wl = wl
        self.dir = self.work / f"{self.key}-{wl.key}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write_config(wl)

    def write_config(self, wl: Workload) -> None:
        raise NotImplementedError

    def up(self) -> None:
        """Issue the start command; it may still be running when this returns."""
        self._up = self.procs.popen(self.up_argv(), log=self.dir / "up.log", env=self.env())

    def up_argv(self) -> list[str]:
        raise NotImplementedError

    def warm_up_argv(self) -> list[str] | None:
        """Start everything again with the supervisor still running; None: no such thing."""
        return None

    def warm_up(self) -> None:
        argv = self.warm_up_argv()
        assert argv is not None
        self._up = self.procs.popen(argv, log=self.dir / "warm-up.log", env=self.env())

    def finish_up(self, timeout: float) -> None:
        if self._up is not None:
            self._check(self._up, timeout, "start command", self.dir / "up.log")

    def check_up(self) -> None:
        """While waiting for the ports: fail at once when the start command failed."""
        if self._up is not None and self._up.poll() not in (None, 0):
            self._check(self._up, 0, "start command", self.dir / "up.log")

    def down(self) -> None:
        self._down = self.procs.popen(self.down_argv(), log=self.dir / "down.log", env=self.env())

    def down_argv(self) -> list[str]:
        raise NotImplementedError

    def finish_down(self, timeout: float) -> None:
        if self._down is not None:
            self._check(self._down, timeout, "stop command", self.dir / "down.log")

    def shutdown(self, timeout: float = 30) -> None:
        """End the supervisor itself (after down)."""

    def supervisor_pids(self) -> list[int]:
        return []

    def ready_times(self) -> dict[str, float] | None:
        """When the supervisor said each service was ready (None: it does not say)."""
        return None

    def status(self) -> None:
        """Run the tool's status command once."""
        raise NotImplementedError

    @property
    def status_command(self) -> str:
        return ""

    def metrics_url(self) -> str | None:
        return None

    def env(self) -> dict[str, str]:
        return {}

    def _check(self, p: subprocess.Popen[bytes], timeout: float, what: str, log: Path) -> None:
        rc = wait(p, timeout, f"{self.name} {what}")
        if rc != 0:
            raise RunnerError(f"{self.name} {what} `{' '.join(map(str, p.args))}` exited {rc}:\n{tail(log)}")  # type: ignore[arg-type]


class Bare(Runner):
    """bench/bare.py: subprocess spawn of all + polling connect of each port."""

    key = "bare"
    name = "bare loop"
    ordered = True

    def write_config(self, wl: Workload) -> None:
        spec = {
            "record": str(self.dir / "bare-ready.jsonl"),
            "services": [{"name": s.name, "port": s.port, "argv": list(s.argv), "wave": s.wave} for s in wl.services],
        }
        (self.dir / "spec.json").write_text(json.dumps(spec))
        (self.dir / "bare-ready.jsonl").unlink(missing_ok=True)

    def up_argv(self) -> list[str]:
        return [sys.executable, str(BENCH / "bare.py"), str(self.dir / "spec.json")]

    def finish_up(self, timeout: float) -> None:
        self.check_up()

    def check_up(self) -> None:
        if self._up is not None and self._up.poll() is not None:
            raise RunnerError(f"bare loop exited {self._up.returncode}:\n{tail(self.dir / 'up.log')}")

    def supervisor_pids(self) -> list[int]:
        return [self._up.pid] if self._up is not None else []

    def ready_times(self) -> dict[str, float]:
        from supervisord_lite.demo import read_records

        return {str(e["name"]): float(str(e["time"])) for e in read_records(self.dir / "bare-ready.jsonl")}

    def down(self) -> None:
        if self._up is not None:
            self._up.terminate()

    def finish_down(self, timeout: float) -> None:
        if self._up is not None:
            wait(self._up, timeout, "bare loop")

    def status(self) -> None:
        raise NotImplementedError


class Supervisord(Runner):
    key = "supervisord"
    name = "supervisord"
    bin = PEERS / "supervisor" / "bin"

    def missing(self) -> str | None:
        if not (self.bin / "supervisord").exists():
            return "not installed (run bench/setup_peers.sh)"
        return None

    def version(self) -> str:
        return _version([str(self.bin / "supervisord"), "--version"])

    def write_config(self, wl: Workload) -> None:
        d = self.dir
        (d / "logs").mkdir(exist_ok=True)
        lines = [
            "[unix_http_server]", f"file={d / 'supervisor.sock'}", "",
            "[supervisord]", f"logfile={d / 'supervisord.log'}", f"pidfile={d / 'supervisord.pid'}",
            f"childlogdir={d / 'logs'}", "minfds=4096", "", "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{d / 'supervisor.sock'}", "",
        ]
        for s in wl.services:
            lines += [f"[program:{s.name}]", "command=" + " ".join(s.argv), "autostart=true", "autorestart=true",
                      "stopasgroup=true", "killasgroup=true", ""]
        (d / "supervisord.conf").write_text("\n".join(lines))
        (d / "supervisord.pid").unlink(missing_ok=True)

    def ctl(self, *args: str) -> list[str]:
        return [str(self.bin / "supervisorctl"), "-c", str(self.dir / "supervisord.conf"), *args]

    def up_argv(self) -> list[str]:
        return [str(self.bin / "supervisord"), "-c", str(self.dir / "supervisord.conf")]

    def supervisor_pids(self) -> list[int]:
        pidfile = self.dir / "supervisord.pid"
        poll(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "supervisord's pidfile")
        return [int(pidfile.read_text())]

    def status(self) -> None:
        self.procs.run(self.ctl("status"), 30)

    @property
    def status_command(self) -> str:
        return "supervisorctl status"

    def down_argv(self) -> list[str]:
        return self.ctl("stop", "all")

    def warm_up_argv(self) -> list[str]:
        return self.ctl("start", "all")

    def shutdown(self, timeout: float = 30) -> None:
        pids = self.supervisor_pids()
        self.procs.run(self.ctl("shutdown"), timeout)
        poll(lambda: all(gone(p) for p in pids), timeout, "supervisord to exit")


class PM2(Runner):
    key = "pm2"
    name = "PM2"
    bin = PEERS / "node_modules" / ".bin" / "pm2"
    home = PEERS / "pm2-home"

    def missing(self) -> str | None:
        if not self.bin.exists():
            return "not installed (run bench/setup_peers.sh; needs npm)"
        if shutil.which("node") is None:
            return "node not found"
        return None

    def version(self) -> str:
        try:
            return str(json.loads((PEERS / "node_modules" / "pm2" / "package.json").read_text())["version"])
        except (OSError, ValueError, KeyError):
            return "?"

    def env(self) -> dict[str, str]:
        return {"PM2_HOME": str(self.home)}

    def pm2(self, *args: str) -> list[str]:
        return [str(self.bin), *args]

    def write_config(self, wl: Workload) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.procs.run(self.pm2("kill"), 60, env=self.env(), log=self.dir / "kill.log")  # a cold start, every time
        apps = [
            {"name": s.name, "script": s.argv[0], "args": list(s.argv[1:]), "interpreter": "none",
             "autorestart": True, "exec_mode": "fork", "max_restarts": 1000}
            for s in wl.services
        ]
        (self.dir / "ecosystem.config.json").write_text(json.dumps({"apps": apps}, indent=1))

    def up_argv(self) -> list[str]:
        return self.pm2("start", str(self.dir / "ecosystem.config.json"))

    def supervisor_pids(self) -> list[int]:
        pidfile = self.home / "pm2.pid"
        poll(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "PM2's pidfile")
        return [int(pidfile.read_text())]

    def status(self) -> None:
        self.procs.run(self.pm2("ls"), 30, env=self.env())

    @property
    def status_command(self) -> str:
        return "pm2 ls"

    def down_argv(self) -> list[str]:
        return self.pm2("delete", "all")

    def warm_up_argv(self) -> list[str]:
        return self.up_argv()  # the God daemon is still running

    def shutdown(self, timeout: float = 30) -> None:
        pids = self.supervisor_pids()
        self.procs.run(self.pm2("kill"), timeout, env=self.env(), log=self.dir / "kill.log")
        poll(lambda: all(gone(p) for p in pids), timeout, "the PM2 daemon to exit")


class Circus(Runner):
    key = "circus"
    name = "circus"
    bin = PEERS / "circus" / "bin"

    def missing(self) -> str | None:
        if not (self.bin / "circusd").exists():
            return "not installed (optional; run bench/setup_peers.sh)"
        return None

    def version(self) -> str:
        return _version([str(self.bin / "circusd"), "--version"])

    def write_config(self, wl: Workload) -> None:
        d = self.dir
        lines = [
            "[circus]", f"endpoint = ipc://{d / 'ctl.sock'}", f"pubsub_endpoint = ipc://{d / 'pub.sock'}",
            f"pidfile = {d / 'circusd.pid'}", f"logoutput = {d / 'circusd.log'}", "statsd = False", "",
        ]
        for s in wl.services:
            lines += [f"[watcher:{s.name}]", f"cmd = {s.argv[0]}", "args = " + " ".join(s.argv[1:]),
                      "numprocesses = 1", "copy_env = True", "respawn = True", "stop_children = True", ""]
        (d / "circus.ini").write_text("\n".join(lines))
        (d / "circusd.pid").unlink(missing_ok=True)

    def ctl(self, *args: str) -> list[str]:
        # circusctl gives up waiting for an answer after --timeout: stopping 1000 watchers takes longer than 30 s
        wait = 30 + 0.2 * len(self.wl.services) if self.wl else 30
        return [str(self.bin / "circusctl"), "--endpoint", f"ipc://{self.dir / 'ctl.sock'}", "--timeout", f"{wait:g}",
                *args]

    def up_argv(self) -> list[str]:
        return [str(self.bin / "circusd"), "--daemon", str(self.dir / "circus.ini")]

    def supervisor_pids(self) -> list[int]:
        pidfile = self.dir / "circusd.pid"
        poll(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "circusd's pidfile")
        return [int(pidfile.read_text())]

    def status(self) -> None:
        self.procs.run(self.ctl("status"), 30)

    @property
    def status_command(self) -> str:
        return "circusctl status"

    def down_argv(self) -> list[str]:
        return self.ctl("stop")

    def warm_up_argv(self) -> list[str]:
        return self.ctl("start")

    def shutdown(self, timeout: float = 30) -> None:
        pids = self.supervisor_pids()
        self.procs.run(self.ctl("quit"), timeout)
        poll(lambda: all(gone(p) for p in pids), timeout, "circusd to exit")


class Ours(Runner):
    key = "svc"
    name = "supervisord-lite"
    ordered = True

    def __init__(self, procs: Procs, work: Path) -> None:
        super().__init__(procs, work)
        sibling = Path(sys.executable).with_name("svc")
        self.svc = str(sibling) if sibling.exists() else (shutil.which("svc") or "svc")
        self._snapshot: dict | None = None

    def missing(self) -> str | None:
        if not Path(self.svc).exists() and shutil.which(self.svc) is None:
            return "`svc` not found (pip install -e . into the Python that runs the bench)"
        return None

    def version(self) -> str:
        try:
            from importlib.metadata import version

            v = version("supervisord-lite")
        except Exception:  # noqa: BLE001 (any metadata problem: just say unknown)
            v = "?"
        try:
            rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            rev = ""
        return f"{v} ({rev})" if rev else v

    def cmd(self, *args: str) -> list[str]:
        return [self.svc, *args, "-f", str(self.dir / "svc.toml")]

    def write_config(self, wl: Workload) -> None:
        from workloads import free_ports

        taken = {s.port for s in wl.services}
        self.metrics_port = next(p for p in free_ports(len(taken) + 1) if p not in taken)  # never a service's port
        manifest: dict[str, object] = {
            "supervisor": {"name": f"bench-{wl.key}", "state_dir": str(self.dir / "state"),
                           "metrics": f"127.0.0.1:{self.metrics_port}", "probe_interval": "2s"},
            "tiers": {name: {"order": order} for name, order in wl.tiers.items()},
        }
        services: dict[str, dict[str, object]] = {}
        for s in wl.services:
            entry: dict[str, object] = {"tier": s.tier, "port": s.port, "command": list(s.argv), "restart": "always"}
            if s.depends_on:
                entry["depends_on"] = list(s.depends_on)
            entry.update(wl.extra.get(s.name, {}))
            services[s.name] = entry
        for name, tier, port, replaced_by in wl.reserved:
            services[name] = {"tier": tier, "port": port, "command": ["true"],
                              "status": "deprecated", **({"replaced_by": replaced_by} if replaced_by else {})}
        manifest["services"] = services
        (self.dir / "svc.toml").write_text(tomli_w.dumps(manifest))
        self._snapshot = None

    def up_argv(self) -> list[str]:
        return self.cmd("up")

    def snapshot(self, refresh: bool = False) -> dict:
        if self._snapshot is None or refresh:
            log = self.dir / "status.json"
            log.unlink(missing_ok=True)
            rc = self.procs.run(self.cmd("status", "--json"), 30, log=log)
            if rc != 0:
                raise RunnerError(f"svc status --json exited {rc}:\n{tail(log)}")
            try:
                self._snapshot = json.loads(log.read_text())
            except ValueError as e:
                raise RunnerError(f"svc status --json printed no JSON ({e}):\n{tail(log)}") from None
        return self._snapshot  # type: ignore[return-value]

    def supervisor_pids(self) -> list[int]:
        return [int(self.snapshot()["pid"])]

    def ready_times(self) -> dict[str, float]:
        snap = self.snapshot(refresh=True)
        return {s["name"]: float(s["ready_at"]) for s in snap["services"] if s.get("ready_at")}

    def status(self) -> None:
        rc = self.procs.run(self.cmd("status"), 30)
        if rc != 0:
            raise RunnerError(f"svc status exited {rc}")

    @property
    def status_command(self) -> str:
        return "svc status"

    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def down_argv(self) -> list[str]:
        return self.cmd("down")

    def warm_up_argv(self) -> list[str]:
        return self.cmd("up")  # the daemon stays after `svc down`

    def shutdown(self, timeout: float = 30) -> None:
        try:
            pids = self.supervisor_pids()
        except (RunnerError, BenchTimeout):
            pids = []
        rc = self.procs.run(self.cmd("shutdown"), timeout, log=self.dir / "shutdown.log")
        if rc != 0:
            raise RunnerError(f"svc shutdown exited {rc}:\n{tail(self.dir / 'shutdown.log')}")
        poll(lambda: all(gone(p) for p in pids), timeout, "the svc daemon to exit")


def scrape(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:
        return len(r.read())


RUNNERS: dict[str, type[Runner]] = {r.key: r for r in (Bare, Supervisord, PM2, Circus, Ours)}
