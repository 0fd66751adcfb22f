"""The issue's performance targets, checked against the figures of one bench run.

The table at the end of bench/results.md is computed here from the run's own numbers
(medians over the runs, ratios and differences to the bare loop of the same run), so
it can never disagree with the tables above it. ``figures`` is the plain-data form of
a run that run.py also saves as JSON next to the markdown; ``--before FILE.json``
adds an earlier run's value of each target as a column.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The runners that are peers (the ones "ahead of every peer" is about).
PEERS = ("supervisord", "pm2", "circus")

Figures = dict[str, Any]


@dataclass(frozen=True)
class Target:
    label: str
    measured: str  # the figures it is computed from, with their spread
    value: float | None  # the compared quantity (None: not measured in this run)
    limit: float
    unit: str  # "x" (ratio), "ms" (a difference, in seconds), "MB" (bytes), "s"
    miss: str = ""  # what "not met" says, when "by" the value's excess would not read well

    @property
    def met(self) -> bool | None:
        return None if self.value is None else self.value <= self.limit

    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        if self.met:
            return "yes"
        if self.miss:
            return self.miss
        return f"no, by {show(self.value - self.limit, self.unit)}"


def show(value: float, unit: str) -> str:
    if unit == "x":
        return f"×{value:.2f}"
    if unit == "ms":
        return f"{value * 1000:.0f} ms"
    if unit == "MB":
        return f"{value / 2**20:.0f} MB"
    return f"{value:.2f} s"


def _series(fig: Figures, table: str, wl: str, runner: str, name: str) -> list[float]:
    return list(fig.get(table, {}).get(wl, {}).get(runner, {}).get(name, []))


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _spread(values: list[float], unit: str) -> str:
    """" (min–max)", the unit once at the end."""
    if len(values) < 2:
        return ""
    low, high = show(min(values), unit).lstrip("×"), show(max(values), unit).lstrip("×")
    return f" ({low.split()[0]}–{high})"


def vs_bare(fig: Figures, wl: str, name: str, limit: float, label: str, *, over: bool = False) -> Target:
    """svc against the bare loop of the same runs: a ratio (``over``: a difference)."""
    ours, bare = _series(fig, "values", wl, "svc", name), _series(fig, "values", wl, "bare", name)
    kind, unit = ("diffs", "ms") if over else ("ratios", "x")
    per_run = _series(fig, kind, wl, "svc", name)
    value = _median(per_run)
    fig_unit = "ms" if name == "restart" else "s"
    if value is None or not bare:
        return Target(label, "not measured", None, limit, unit)
    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    measured = (f"{show(ours_median, fig_unit)} vs {show(bare_median, fig_unit)}: "
                f"{'+' if over and value >= 0 else ''}{show(value, unit)}{_spread(per_run, unit)}")
    miss = "" if over else (f"no: ×{value:.2f} where ×{limit:g} is the target "
                            f"({show(ours_median - limit * bare_median, fig_unit)} over it)")
    return Target(label, measured, value, limit, unit, miss=miss)


def ahead_of_peers(fig: Figures, wl: str, label: str) -> Target:
    """svc's median cold up against the fastest peer's (a peer that gave up at a deadline
    counts as that deadline). The value is ours over the fastest peer's: met below 1."""
    ours = _median(_series(fig, "values", wl, "svc", "cold_up"))
    peers: dict[str, float] = {}
    missing = []
    for peer in PEERS:
        got = _median(_series(fig, "values", wl, peer, "cold_up"))
        gave_up = fig.get("censored", {}).get(wl, {}).get(peer, {}).get("cold_up")
        if got is None and gave_up is not None:
            got = float(gave_up)
        if got is None:
            missing.append(fig.get("labels", {}).get(peer, peer))
        else:
            peers[peer] = got
    if ours is None or not peers:
        return Target(label, "not measured" + (f" (no {', '.join(missing)})" if missing else ""), None, 1.0, "x")
    fastest = min(peers, key=peers.__getitem__)
    name = fig.get("labels", {}).get(fastest, fastest)
    measured = f"{ours:.2f} s; fastest peer {name} {peers[fastest]:.2f} s"
    if missing:
        measured += f" ({', '.join(missing)} not measured)"
    behind = f"no: behind {name} by {ours - peers[fastest]:.2f} s (×{ours / peers[fastest]:.2f})"
    return Target(label, measured, ours / peers[fastest], 1.0 - 1e-9, "x", miss=behind)


def fixed_over_python(fig: Figures, key: str, label: str, limit: float = 0.060) -> Target:
    diffs = list(fig.get("fixed_diffs", {}).get(key, []))
    values = list(fig.get("fixed", {}).get(key, []))
    if not diffs:
        return Target(label, "not measured", None, limit, "ms")
    value = statistics.median(diffs)
    measured = f"{statistics.median(values) * 1000:.0f} ms, +{value * 1000:.0f} ms{_spread(diffs, 'ms')}"
    return Target(label, measured, value, limit, "ms")


def ours_alone(fig: Figures, wl: str, name: str, limit: float, unit: str, label: str, scale: float = 1.0) -> Target:
    values = [v * scale for v in _series(fig, "values", wl, "svc", name)]
    value = _median(values)
    if value is None:
        return Target(label, "not measured", None, limit, unit)
    return Target(label, f"{show(value, unit)}{_spread(values, unit)}", value, limit, unit)


def tiers_target(fig: Figures) -> Target:
    label = "1000 services in 5 tiers ≤ 1.2× 1000 flat"
    tiers = fig.get("tiers") or {}
    flat, tiered = tiers.get("up", {}).get("flat"), tiers.get("up", {}).get("tiers")
    if not flat or not tiered:
        return Target(label, "not measured (--tiers 1000)", None, 1.2, "x")
    value = statistics.median(tiered) / statistics.median(flat)
    measured = (f"{statistics.median(tiered):.2f} s vs {statistics.median(flat):.2f} s flat "
                f"({tiers.get('n')} {tiers.get('kind', 'stub')} services)")
    return Target(label, measured, value, 1.2, "x")


def compute(fig: Figures) -> list[Target]:
    idle = fig.get("idle", {}).get("socat-1000")
    out = [
        vs_bare(fig, "socat-200", "cold_up", 1.15, "cold up ≤ 1.15× bare, socat, N = 200"),
        vs_bare(fig, "socat-1000", "cold_up", 1.15, "cold up ≤ 1.15× bare, socat, N = 1000"),
        vs_bare(fig, "tiny-200", "cold_up", 1.10, "cold up ≤ 1.1× bare, Python services, N = 200"),
    ]
    out += [ahead_of_peers(fig, f"socat-{n}", f"cold up ahead of every peer, socat, N = {n}")
            for n in (10, 50, 200, 1000)]
    out += [
        ahead_of_peers(fig, "tiny-200", "cold up ahead of every peer, Python services, N = 200"),
        vs_bare(fig, "socat-10", "cold_up", 0.150, "`svc up` of 10 socat ≤ bare + 150 ms", over=True),
        fixed_over_python(fig, "version", "`svc --version` ≤ `python -c pass` + 60 ms"),
        fixed_over_python(fig, "status", "`svc status` ≤ `python -c pass` + 60 ms"),
        fixed_over_python(fig, "down", "`svc down` (stopping 10) ≤ `python -c pass` + 60 ms"),
        fixed_over_python(fig, "down_idle", "`svc down` (nothing to stop) ≤ `python -c pass` + 60 ms"),
        vs_bare(fig, "socat-200", "down", 1.2, "down ≤ 1.2× bare, socat, N = 200"),
        vs_bare(fig, "socat-1000", "down", 1.2, "down ≤ 1.2× bare, socat, N = 1000"),
        vs_bare(fig, "socat-200", "restart", 0.010, "restart after SIGKILL ≤ bare + 10 ms, socat, N = 200", over=True),
        vs_bare(fig, "socat-1000", "restart", 0.010, "restart after SIGKILL ≤ bare + 10 ms, socat, N = 1000",
                over=True),
        ours_alone(fig, "socat-1000", "idle_cpu", 0.050, "ms",
                   "idle CPU ≤ 50 ms per 20 s, socat, N = 1000, liveness probes on"
                   + (f" (window {idle:g} s, scaled to 20 s)" if idle and idle != 20 else ""),
                   scale=20.0 / idle if idle else 1.0),
        ours_alone(fig, "socat-200", "rss", 35 * 2**20, "MB", "RSS ≤ 35 MB, socat, N = 200"),
        ours_alone(fig, "socat-1000", "rss", 60 * 2**20, "MB", "RSS ≤ 60 MB, socat, N = 1000"),
        tiers_target(fig),
    ]
    return out


def render(fig: Figures, before: Figures | None = None) -> list[str]:
    """The section: one row per target; with ``before``, that run's value as a column."""
    targets = compute(fig)
    then = {t.label: t for t in compute(before)} if before else {}
    head = "| target | measured (median, spread) | met? |"
    rule = "| --- | --- | --- |"
    if before:
        head, rule = "| target | before | measured (median, spread) | met? |", "| --- | --- | --- | --- |"
    met = sum(1 for t in targets if t.met)
    measured = sum(1 for t in targets if t.value is not None)
    out = ["## The issue's targets", "",
           f"Computed from the figures above by bench/targets.py: {met} of {measured} measured targets met"
           f" ({len(targets) - measured} not measured in this run). Ratios and differences are medians of"
           " the per-run ratios (differences) to the bare loop of the same run; \"ahead of every peer\""
           " compares medians of cold up (a peer that gave up at the deadline counts as the deadline).", "",
           head, rule]
    for t in targets:
        cells = [t.label]
        if before:
            old = then.get(t.label)
            cells.append(show(old.value, old.unit) if old and old.value is not None else "–")
        cells += [t.measured, t.verdict()]
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def load(path: Path) -> Figures:
    return json.loads(path.read_text())


def save(fig: Figures, path: Path) -> None:
    path.write_text(json.dumps(fig, indent=1, sort_keys=True))
