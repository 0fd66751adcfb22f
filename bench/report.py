"""The bench's report: the figures of a run, and their markdown.

Results holds every per-run value; render() turns them into the tables of
bench/results.md (median, min–max, ratio to the bare loop of the same run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil

import targets
import tiers
import workloads
from fixed import render_fixed
from runners import Runner

# figure key -> (label, unit). Units: "s" seconds, "ms" (stored in seconds), "MB" (stored in bytes), "cpu" seconds.
FIGURES: dict[str, tuple[str, str]] = {
    "cold_up": ("cold up (command -> every port accepts)", "s"),
    "warm_up": ("up with the supervisor already running (ratio to the bare loop's cold up)", "s"),
    "lag": ("readiness lag (port open -> reported ready), median over services", "ms"),
    "restart": ("restart after SIGKILL of one service (-> port accepts again)", "ms"),
    "down": ("down (command -> every port closed, every process gone)", "s"),
    "idle_cpu": ("supervisor CPU over the idle window", "cpu"),
    "rss": ("supervisor RSS", "MB"),
    "status": ("status command wall time", "ms"),
    "metrics": ("one metrics scrape (GET /metrics)", "ms"),
}


@dataclass
class Results:
    # workload key -> runner key -> figure -> per-run values (None when not measured in that run)
    values: dict[str, dict[str, dict[str, list[float]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    # workload key -> runner key -> figure -> per-run ratio to bare in the same run
    ratios: dict[str, dict[str, dict[str, list[float]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    errors: list[str] = field(default_factory=list)
    failed: set[tuple[str, str]] = field(default_factory=set)  # (workload, runner) that failed a run
    titles: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # figure notes ("status command" per runner)
    fixed: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # CLI fixed costs per run
    fixed_diffs: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # minus python -c pass
    # workload key -> runner key -> figure -> per-run difference to bare in the same run
    diffs: dict[str, dict[str, dict[str, list[float]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    # workload key -> runner key -> figure -> the deadline it ran past (then no further run of it)
    censored: dict[str, dict[str, dict[str, float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    idle: dict[str, float] = field(default_factory=dict)  # workload key -> its idle window
    tiers: dict[str, object] = field(default_factory=dict)  # tiers.measure()

    def figures(self, runners: list[Runner]) -> targets.Figures:
        """Plain data for bench/targets.py and the JSON file."""
        return json.loads(json.dumps({
            "values": self.values, "ratios": self.ratios, "diffs": self.diffs, "censored": self.censored,
            "fixed": self.fixed, "fixed_diffs": self.fixed_diffs, "idle": self.idle, "tiers": self.tiers,
            "labels": {r.key: r.label for r in runners},
        }))


def machine() -> list[str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [
        f"- Machine: {os.cpu_count()} CPUs ({model or platform.processor() or '?'}), "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({sys.executable})",
    ]


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ms":
        return f"{value * 1000:.0f} ms" if value >= 0.0095 else f"{value * 1000:.1f} ms"
    if unit == "MB":
        return f"{value / 2**20:.0f} MB"
    if unit == "cpu":
        return f"{value:.3f} s"
    return f"{value:g}"


def cell(values: list[float], ratios: list[float], unit: str, is_bare: bool, runs: int = 0,
         past: float | None = None) -> str:
    """Median (min–max) ×ratio; "[1 run]" when fewer runs than the others; "> N s" past a deadline."""
    if not values:
        return f"> {past:g} s" if past is not None else "n/a"
    med = statistics.median(values)
    text = fmt(med, unit)
    if len(values) > 1:
        text += f" ({fmt(min(values), unit).split()[0]}–{fmt(max(values), unit)})"
    if ratios and not is_bare:
        text += f" ×{statistics.median(ratios):.2f}"
    if runs and len(values) < runs and past is None:
        text += f" [{len(values)} run{'s' if len(values) > 1 else ''}]"
    if past is not None:
        text += f"; then > {past:g} s"
    return text


def render(res: Results, runners: list[Runner], skipped: dict[str, str], args: argparse.Namespace,
           elapsed: float) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    idle_where = f" at {', '.join(args.idle_at)}, {args.short_idle:g} s elsewhere" if args.idle_at else ""
    out = [
        "# Benchmark: supervisord-lite vs supervisord, PM2, circus and a bare loop",
        "",
        f"- Date: {now}; command: `python bench/run.py {' '.join(sys.argv[1:])}`".rstrip(),
        *machine(),
        "- Versions: " + ", ".join(r.label for r in runners),
        f"- {args.runs} run(s) per figure: median (min–max) ×ratio to the bare loop of the same run; "
        f"idle window {args.idle:g} s{idle_where}; runners alternated; {elapsed:.0f} s in all",
    ]
    if args.deadline:
        out.append(f"- Deadline {args.deadline:g} s per wait (--deadline): a figure past it reads \"> {args.deadline:g} s\","
                   " and is not waited for again in later runs (a cold up past it: that runner is not run again on"
                   " that workload; a down past it: later runs end before the down, and the bench kills what is left)")
    for key, why in skipped.items():
        out.append(f"- Skipped {key}: {why}")
    if args.socat_sizes and not workloads.SOCAT:
        out.append("- Skipped the socat workloads: socat not found (bench/setup_peers.sh installs it)")
    if any(n > args.peers_max_n for n in args.sizes + args.socat_sizes) and any(
            r.key not in ("bare", "svc") for r in runners):
        out.append(f"- supervisord, PM2 and circus ran only up to N = {args.peers_max_n} (--peers-max-n)")
    if args.peers_big_n and any(n >= args.peers_big_n for n in args.sizes + args.socat_sizes):
        out.append(f"- supervisord, PM2 and circus ran {args.peers_big_runs} run(s) at N ≥ {args.peers_big_n} "
                   "(--peers-big-runs), without the warm up: they take minutes per run there; such cells say [1 run]")
    out.append("")
    # figures each runner gave somewhere in this run: a missing one of these after a failure
    # reads "error"; one it never gives (a peer's metrics scrape) stays "n/a"
    gives = {key: {fig for by in res.values.values() for fig, vals in by.get(key, {}).items() if vals}
             for key in {k for by in res.values.values() for k in by}}
    for wl_key, by_runner in res.values.items():
        out += [f"## {res.titles[wl_key]}", ""]
        cols = [r for r in runners if r.key in by_runner]
        out.append("| figure | " + " | ".join(r.label for r in cols) + " |")
        out.append("| --- |" + " --- |" * len(cols))
        for fig, (label, unit) in FIGURES.items():
            if not any(by_runner[r.key].get(fig) or res.censored[wl_key][r.key].get(fig) for r in cols):
                continue
            row = [cell(by_runner[r.key].get(fig, []), res.ratios[wl_key][r.key].get(fig, []), unit, r.key == "bare",
                        args.runs, res.censored[wl_key][r.key].get(fig)) for r in cols]
            row = [("error" if c == "n/a" and (wl_key, r.key) in res.failed and fig in gives.get(r.key, ()) else c)
                   for c, r in zip(row, cols)]
            out.append(f"| {label} | " + " | ".join(row) + " |")
        out.append("")
    if res.fixed:
        out += ["## Fixed costs of the CLI", "",
                "Each command as a whole process, next to `python -c pass` run the same way in the same run; "
                "`svc up` of 10 socat services against the bare loop is the cold up of the N = 10 socat table.", ""]
        out += render_fixed(res.fixed, res.fixed_diffs) + [""]
    status_cmds = [f"{r.label}: `{r.status_command}`" for r in runners if r.status_command]
    if status_cmds:
        out += ["Status commands: " + "; ".join(status_cmds) + ".", ""]
    out += ["Readiness lag is n/a for supervisord, PM2 and circus: they do not report readiness by port. "
            "For the bare loop it is its own connect poll noticing the port.", ""]
    if res.tiers:
        out += tiers.section(res.tiers, f"python bench/run.py {' '.join(sys.argv[1:])}")  # type: ignore[arg-type]
    if res.errors:
        out += ["## Errors", ""] + [f"- {e}" for e in res.errors] + [""]
    if args.notes and args.notes.exists():
        out += [args.notes.read_text().rstrip("\n"), ""]
    if args.targets:
        out += targets.render(res.figures(runners), targets.load(args.before) if args.before else None)
    return "\n".join(out)
