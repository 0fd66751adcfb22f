"""Tiered start-up costs what a flat one does: N services in 5 tiers vs N flat (ours only).

    python bench/tiers.py [--n 1000] [--runs 3] [--out bench/results.md]

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
from pathlib import Path

import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import BENCH, free_ports, stub_argv  # noqa: E402

TIERS = 5
LAYOUTS = ("flat", "tiers", "tiers+deps")
HEADING = "## Tiers: N services in 5 tiers vs N flat"


def manifest(layout: str, n: int, ports: list[int], work: Path) -> Path:
    record = work / f"{layout}.records.jsonl"
    tiers = {"flat": {"order": 0}} if layout == "flat" else {f"t{i}": {"order": i} for i in range(TIERS)}
    services = {}
    for i, port in enumerate(ports[:n]):
        name = f"s{i:04d}"
        tier = "flat" if layout == "flat" else f"t{i % TIERS}"
        entry: dict[str, object] = {"tier": tier, "port": port, "command": list(stub_argv(port, name, record))}
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


def timed(argv: list[str], timeout: float) -> float:
    began = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    took = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"`{' '.join(argv)}` exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return took


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    work = BENCH / ".work" / f"tiers-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    timeout = 60 + 0.5 * args.n
    ports = free_ports(args.n)
    paths = {layout: manifest(layout, args.n, ports, work) for layout in LAYOUTS}
    up: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    down: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    tool = svc()
    began = time.monotonic()
    try:
        for run in range(args.runs):
            order = LAYOUTS[run % len(LAYOUTS):] + LAYOUTS[: run % len(LAYOUTS)]
            for layout in order:
                path = str(paths[layout])
                # start the daemon and the services once, then stop them: the figure is a warm up
                timed([tool, "up", "-f", path], timeout)
                timed([tool, "down", "-f", path], timeout)
                up[layout].append(timed([tool, "up", "-f", path], timeout))
                down[layout].append(timed([tool, "down", "-f", path], timeout))
                subprocess.run([tool, "shutdown", "-f", path], capture_output=True, timeout=timeout)
                print(f"run {run + 1} {layout}: up {up[layout][-1]:.2f} s, down {down[layout][-1]:.2f} s", file=sys.stderr, flush=True)
    finally:
        for path in paths.values():
            subprocess.run([tool, "shutdown", "-f", str(path)], capture_output=True, timeout=timeout)
    flat_up = statistics.median(up["flat"])
    lines = [
        HEADING,
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; command: `python bench/tiers.py --n {args.n} --runs {args.runs}`;"
        f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; {time.monotonic() - began:.0f} s in all",
        f"- {args.n} stub services (bench/stub.py); `svc up` with the daemon running, command -> every service ready; median (min–max) of {args.runs} runs",
        "",
        "| layout | up | ×flat | down |",
        "| --- | --- | --- | --- |",
    ]
    for layout in LAYOUTS:
        u, d = up[layout], down[layout]
        lines.append(
            f"| {layout} | {statistics.median(u):.2f} s ({min(u):.2f}–{max(u):.2f} s) | ×{statistics.median(u) / flat_up:.2f} "
            f"| {statistics.median(d):.2f} s |"
        )
    section = "\n".join(lines) + "\n"
    print(section)
    if args.out is not None:
        text = args.out.read_text() if args.out.exists() else ""
        if HEADING in text:
            head, _, rest = text.partition(HEADING)
            tail = rest[rest.find("\n## ") + 1:] if "\n## " in rest else ""
            text = head + section + ("\n" + tail if tail else "")
        else:
            text = text.rstrip("\n") + "\n\n" + section
        args.out.write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
