"""Tiered start-up costs what a flat one does: N services in 5 tiers vs N flat (ours only).

    python bench/tiers.py [--n 1000] [--runs 3] [--kind stub|socat] [--out bench/results.md]

Each run writes one manifest per layout (flat; 5 tiers; 5 tiers where every service
also depends on one of the tier before), then times `svc up` with the daemon already
running (command -> it returns, every service ready), and `svc down`. Layouts take
turns in a rotating order. The figure is the median, and its ratio to the flat layout.
With --out, the section "Tiers" of that file is replaced (or added).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import BENCH, free_ports, socat_argv, stub_argv  # noqa: E402

TIERS = 5
LAYOUTS = ("flat", "tiers", "tiers+deps")
HEADING = "## Tiers: N services in 5 tiers vs N flat"


def manifest(layout: str, n: int, ports: list[int], work: Path, kind: str = "stub") -> Path:
    record = work / f"{layout}.records.jsonl"
    tiers = {"flat": {"order": 0}} if layout == "flat" else {f"t{i}": {"order": i} for i in range(TIERS)}
    services = {}
    for i, port in enumerate(ports[:n]):
        name = f"s{i:04d}"
        tier = "flat" if layout == "flat" else f"t{i % TIERS}"
        argv = socat_argv(port) if kind == "socat" else stub_argv(port, name, record)
        entry: dict[str, object] = {"tier": tier, "port": port, "command": list(argv)}
        if layout == "tiers+deps" and i % TIERS:
            entry["depends_on"] = [f"s{i - 1:04d}"]  # the service just before it, one tier down
        services[name] = entry
    doc = {
        "supervisor": {"name": f"tiers-{layout}", "state_dir": str(work / layout / "state"), "metrics": "", "probe_interval": "2s"},
        "tiers": tiers,
        "services": services,
    }
    path = work / layout / "svc.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(doc))
    return path


def svc() -> str:
    sibling = Path(sys.executable).with_name("svc")
    return str(sibling) if sibling.exists() else (shutil.which("svc") or "svc")


def timed(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> float:
    began = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    took = time.perf_counter() - began
    if result.returncode != 0:
        raise TiersError(f"`{' '.join(argv)}` exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return took


class TiersError(Exception):
    pass


def measure(n: int, runs: int, kind: str = "stub", env: dict[str, str] | None = None,
            log: Callable[[str], None] = lambda _msg: None, layouts: tuple[str, ...] = LAYOUTS) -> dict[str, Any]:
    """Each layout's `svc up` and `svc down` times over ``runs`` (plain data: n, kind,
    runs, seconds, up and down per layout); each layout's daemon is shut down, also on errors."""
    work = BENCH / ".work" / f"tiers-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    env = dict(env if env is not None else os.environ)
    env.setdefault("SVC_REGISTRY", str(work / "registry.json"))  # the user's registry stays out of it
    timeout = 60 + 0.5 * n
    ports = free_ports(n)
    paths = {layout: manifest(layout, n, ports, work, kind) for layout in layouts}
    up: dict[str, list[float]] = {layout: [] for layout in layouts}
    down: dict[str, list[float]] = {layout: [] for layout in layouts}
    tool = svc()
    began = time.monotonic()
    try:
        for run in range(runs):
            order = layouts[run % len(layouts):] + layouts[: run % len(layouts)]
            for layout in order:
                path = str(paths[layout])
                # start the daemon and the services once, then stop them: the figure is a warm up
                timed([tool, "up", "-f", path], timeout, env)
                timed([tool, "down", "-f", path], timeout, env)
                up[layout].append(timed([tool, "up", "-f", path], timeout, env))
                down[layout].append(timed([tool, "down", "-f", path], timeout, env))
                subprocess.run([tool, "shutdown", "-f", path], capture_output=True, timeout=timeout, env=env)
                log(f"tiers run {run + 1}/{runs} {layout}: up {up[layout][-1]:.2f} s, down {down[layout][-1]:.2f} s")
    finally:
        for path in paths.values():
            subprocess.run([tool, "shutdown", "-f", str(path)], capture_output=True, timeout=timeout, env=env)
    shutil.rmtree(work, ignore_errors=True)
    return {"n": n, "kind": kind, "runs": runs, "seconds": time.monotonic() - began, "up": up, "down": down}


def section(result: dict[str, Any], command: str) -> list[str]:
    """The markdown section of one measure()."""
    up, down, n, runs = result["up"], result["down"], result["n"], result["runs"]
    if not up["flat"]:
        return [HEADING, "", "(not measured)", ""]
    what = "socat services" if result.get("kind") == "socat" else "stub services (bench/stub.py)"
    lines = [
        HEADING,
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; command: `{command}`;"
        f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; {result['seconds']:.0f} s in all",
        f"- {n} {what}; `svc up` with the daemon running, command -> every service ready; median (min–max) of {runs} runs",
        "",
        "| layout | up | ×flat | down |",
        "| --- | --- | --- | --- |",
    ]
    flat_up = statistics.median(up["flat"])
    for layout in LAYOUTS:
        u, d = up.get(layout), down.get(layout)
        if not u:
            continue
        lines.append(
            f"| {layout} | {statistics.median(u):.2f} s ({min(u):.2f}–{max(u):.2f} s) | ×{statistics.median(u) / flat_up:.2f} "
            f"| {statistics.median(d):.2f} s |"
        )
    if "tiers+deps" in up:
        lines += ["", '"tiers+deps": each service of tiers 1-4 also `depends_on` the one before it in the tier below.']
    return lines + [""]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--kind", choices=("stub", "socat"), default="stub", help="the services (default stub)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    try:
        result = measure(args.n, args.runs, args.kind, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except (TiersError, subprocess.TimeoutExpired) as e:
        raise SystemExit(str(e)) from None
    text = "\n".join(section(result, f"python bench/tiers.py --n {args.n} --runs {args.runs} --kind {args.kind}"))
    print(text)
    if args.out is not None:
        old = args.out.read_text() if args.out.exists() else ""
        if HEADING in old:
            head, _, rest = old.partition(HEADING)
            tail = rest[rest.find("\n## ") + 1:] if "\n## " in rest else ""
            old = head + text + ("\n" + tail if tail else "")
        else:
            old = old.rstrip("\n") + "\n\n" + text
        args.out.write_text(old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
