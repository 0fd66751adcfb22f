"""The benchmark harness still works: `bench/run.py --smoke` with the bare loop and ours.

Not a timed test: it checks that every workload produced numbers for both runners,
not what the numbers are (that is bench/results.md's job, for people).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

NUMBER = re.compile(r"^\d+(\.\d+)? (s|ms|MB)\b")


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """Section title -> rows of cells of its table (header row first)."""
    out: dict[str, list[list[str]]] = {}
    title = ""
    for line in markdown.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
        elif line.startswith("|") and not line.startswith("| ---") and title:
            out.setdefault(title, []).append([c.strip() for c in line.strip().strip("|").split("|")])
    return out


def run_smoke(out: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--only", "bare,svc", "--targets", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=ROOT)
    try:
        stdout, stderr = proc.communicate(timeout=450)  # a hang bound: it takes 35-90 s on a loaded 2-core machine
    finally:
        if proc.poll() is None:  # SIGTERM first: the bench then cleans up everything it started
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def test_smoke_run_has_numbers_for_the_bare_loop_and_ours(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    done = run_smoke(out)
    assert done.returncode == 0, f"bench --smoke exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    text = out.read_text()
    assert "## Errors" not in text, text
    found = tables(text)
    sections = {t.split(" (")[0]: rows for t, rows in found.items()}
    for section in ("N = 5 tiny services", "Dependency chain of depth 10", "Demo platform"):
        rows = sections.get(section)
        assert rows, f"no table for {section!r} in:\n{text}"
        header, body = rows[0], {r[0].split(" (")[0]: r[1:] for r in rows[1:]}
        assert header[1] == "bare loop" and header[2].startswith("supervisord-lite"), header
        for figure in ("cold up", "readiness lag", "down"):
            cells = body.get(figure)
            assert cells and all(NUMBER.match(c) for c in cells), f"{section} / {figure}: {cells}"
    tiny = {r[0].split(" (")[0]: r[1:] for r in sections["N = 5 tiny services"][1:]}
    for figure in ("restart after SIGKILL of one service", "supervisor RSS"):
        assert all(NUMBER.match(c) for c in tiny[figure]), f"{figure}: {tiny[figure]}"
    for figure in ("status command wall time", "one metrics scrape"):
        assert NUMBER.match(tiny[figure][1]), f"{figure}: {tiny[figure]}"
    # the targets table ends the file, computed from this run: the fixed costs were measured
    assert text.rstrip().splitlines()[-1].startswith("| "), text[-2000:]
    goals = {r[0]: r[1:] for r in sections["The issue's targets"][1:]}
    version = goals["`svc --version` ≤ `python -c pass` + 60 ms"]
    assert re.match(r"\d+ ms, \+\d+ ms$", version[0]) and re.match(r"yes$|no, by \d+ ms$", version[1]), version
    assert goals["cold up ≤ 1.15× bare, socat, N = 1000"] == ["not measured", "not measured"]
    assert json.loads(out.with_suffix(".json").read_text())["fixed"]["version"], "the figures as JSON next to it"


def test_targets_are_computed_from_the_runs_figures() -> None:
    """bench/targets.py on figures of a made-up run: ratios and differences per run, the
    fastest peer, a peer past the deadline, and a before column."""
    sys.path.insert(0, str(ROOT / "bench"))
    import targets

    runs = {"bare": [1.0, 2.0, 1.0], "svc": [1.1, 2.6, 1.1]}
    figures = {
        "values": {"socat-200": {k: {"cold_up": v, "restart": [0.030, 0.030, 0.030]} for k, v in runs.items()},
                   "socat-10": {"svc": {"cold_up": [1.0]}, "circus": {"cold_up": [0.8]}, "pm2": {"cold_up": []}}},
        "ratios": {"socat-200": {"svc": {"cold_up": [1.1, 1.3, 1.1], "restart": [1.0, 1.0, 1.0]}}},
        "diffs": {"socat-200": {"svc": {"restart": [0.004, 0.030, 0.002]}}},
        "censored": {"socat-10": {"pm2": {"cold_up": 60.0}}},
        "labels": {"circus": "circus 0.19.0", "pm2": "PM2 7.0.4"},
        "tiers": {"n": 1000, "kind": "socat", "up": {"flat": [10.0, 11.0, 12.0], "tiers": [13.0, 13.0, 14.0]}},
    }
    got = {t.label: t for t in targets.compute(figures)}
    cold = got["cold up ≤ 1.15× bare, socat, N = 200"]
    assert cold.value == 1.1 and cold.met and cold.measured == "1.10 s vs 1.00 s: ×1.10 (1.10–1.30)"
    restart = got["restart after SIGKILL ≤ bare + 10 ms, socat, N = 200"]
    assert restart.value == 0.004 and restart.met
    peers = got["cold up ahead of every peer, socat, N = 10"]
    assert not peers.met and peers.verdict() == "no: behind circus 0.19.0 by 0.20 s (×1.25)", peers
    assert got["cold up ahead of every peer, socat, N = 200"].met is None  # no peer ran there
    tiers = got["1000 services in 5 tiers ≤ 1.2× 1000 flat"]
    assert tiers.value == 13.0 / 11.0 and tiers.met
    assert got["RSS ≤ 60 MB, socat, N = 1000"].verdict() == "not measured"
    figures["values"]["socat-10"]["circus"]["cold_up"] = [1.5]  # now ahead of circus, and of PM2 past its deadline
    assert {t.label: t for t in targets.compute(figures)}["cold up ahead of every peer, socat, N = 10"].met
    table = targets.render(figures, before=figures)
    assert "| target | before | measured (median, spread) | met? |" in table
    assert "| cold up ≤ 1.15× bare, socat, N = 200 | ×1.10 | 1.10 s vs 1.00 s: ×1.10 (1.10–1.30) | yes |" in table
