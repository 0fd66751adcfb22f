"""The CLI's fixed costs: what `svc` adds to Python's own start-up.

Each command is timed from outside as a whole process (fork, interpreter, imports,
the control socket's round trip, exit), next to `python -c pass` run the same way
in the same run, so the difference is what the project itself costs.
"""

from __future__ import annotations

import statistics
import sys

from observe import Procs, all_listening, poll, timed
from runners import Ours, RunnerError, tail
from workloads import Workload

#: key -> label, in the order of the table; "python" is the reference.
FIXED: dict[str, str] = {
    "python": "`python -c pass` (the reference)",
    "version": "`svc --version`",
    "help": "`svc --help`",
    "status": "`svc status` (daemon running 10 socat services)",
    "down": "`svc down` (10 socat services running -> command returns)",
    "down_idle": "`svc down` with nothing running (start-up + one round trip)",
}


def measure_fixed(ours: Ours, procs: Procs, wl: Workload, got: dict[str, float], repeat: int = 5,
                  timeout: float = 60) -> None:
    """One run of every fixed-cost figure into ``got`` (what was measured before an error counts)."""

    def run(argv: list[str], what: str) -> None:
        rc = procs.run(argv, timeout, log=ours.dir / "fixed.log")
        if rc != 0:
            raise RunnerError(f"{what} exited {rc}:\n{tail(ours.dir / 'fixed.log')}")

    got["python"] = timed(lambda: run([sys.executable, "-c", "pass"], "python -c pass"), repeat)
    got["version"] = timed(lambda: run([ours.svc, "--version"], "svc --version"), repeat)
    got["help"] = timed(lambda: run([ours.svc, "--help"], "svc --help"), repeat)
    ours.prepare(wl)
    run(ours.cmd("up"), "svc up")
    poll(all_listening(wl.ports), timeout, "the 10 socat services to accept")
    got["status"] = timed(lambda: run(ours.cmd("status"), "svc status"), repeat)
    got["down"] = timed(lambda: run(ours.cmd("down"), "svc down"), 1)
    got["down_idle"] = timed(lambda: run(ours.cmd("down"), "svc down"), repeat)
    ours.shutdown(timeout)


def render_fixed(values: dict[str, list[float]], diffs: dict[str, list[float]]) -> list[str]:
    """The table: median (min–max) of each command, and its median difference to `python -c pass`."""
    out = ["| command | wall time | over `python -c pass` |", "| --- | --- | --- |"]
    for key, label in FIXED.items():
        got = values.get(key)
        if not got:
            continue
        med = statistics.median(got) * 1000
        cell = f"{med:.0f} ms ({min(got) * 1000:.0f}–{max(got) * 1000:.0f} ms)"
        extra = f"+{statistics.median(diffs[key]) * 1000:.0f} ms" if key != "python" and diffs.get(key) else ""
        out.append(f"| {label} | {cell} | {extra} |")
    return out
