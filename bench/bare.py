"""The bare loop: the physical limit every supervisor is compared with.

    python bare.py SPEC.json

SPEC is {"record": PATH, "services": [{"name", "port", "argv", "wave"}, ...]}.
Wave by wave it spawns every service with subprocess (each in its own session),
polling a TCP connect to each port of the wave (every 5 ms while spawning, then
every 1 ms) until all accept, appending
{"event": "ready", "name", "time"} to RECORD as each does. Then it only waits for
children and respawns one the moment it dies. SIGTERM: SIGTERM to every child's
process group, wait for all (SIGKILL after 10 s), exit 0. No probes, no state, no
logs: nothing can be faster, which is the point.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time


class Stop(Exception):
    pass


def on_term(_signum: int, _frame: object) -> None:
    raise Stop


def note_ready(record: str, name: str) -> None:
    line = json.dumps({"event": "ready", "name": name, "time": time.time()}) + "\n"
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def sweep(pending: dict[int, str], record: str) -> None:
    for port in [p for p in pending if accepts(p)]:
        note_ready(record, pending.pop(port))


def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    record: str = spec["record"]
    services: list[dict] = spec["services"]
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    children: dict[int, tuple[dict, subprocess.Popen[bytes]]] = {}
    try:
        for wave in sorted({s["wave"] for s in services}):
            members = [s for s in services if s["wave"] == wave]
            pending: dict[int, str] = {}
            last_sweep = time.monotonic()
            for s in members:
                p = spawn(s["argv"])
                children[p.pid] = (s, p)
                if s.get("port"):
                    pending[s["port"]] = s["name"]
                if time.monotonic() - last_sweep > 0.005:  # notice early starters while still spawning
                    sweep(pending, record)
                    last_sweep = time.monotonic()
            while pending:
                sweep(pending, record)
                if pending:
                    time.sleep(0.001)
        while True:  # supervise: respawn at once
            pid, _status = os.waitpid(-1, 0)
            entry = children.pop(pid, None)
            if entry is not None:
                entry[1].returncode = _status  # reaped here, not by Popen
                p = spawn(entry[0]["argv"])
                children[p.pid] = (entry[0], p)
    except Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for pid in children:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for pid, (_s, p) in children.items():
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
