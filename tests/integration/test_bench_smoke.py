"""The benchmark harness still works: `bench/run.py --smoke` with the bare loop and ours.

Not a timed test: it checks that every workload produced numbers for both runners,
not what the numbers are (that is bench/results.md's job, for people).
"""

from __future__ import annotations

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
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--only", "bare,svc", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=ROOT)
    try:
        stdout, stderr = proc.communicate(timeout=100)
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
