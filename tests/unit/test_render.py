"""What `svc up` prints on a pipe and when it fails: no stutter, no repeats, no stale logs."""

from __future__ import annotations

import pytest

from supervisord_lite.cli.render import failure_report, progress_line
from supervisord_lite.core.snapshot import ServiceSnapshot
from supervisord_lite.core.states import ServiceState

S = ServiceState


def svc(name: str, state: ServiceState, **kw: object) -> ServiceSnapshot:
    return ServiceSnapshot(name=name, tier="app", port=kw.pop("port", 8000), state=state, **kw)  # type: ignore[arg-type]


def test_progress_lines_do_not_repeat_the_state_the_reason_already_says() -> None:
    waiting = svc("api", S.WAITING, reason="waiting for db (starting)", blocked_by=("db",))
    assert progress_line(waiting) == "api: waiting for db (starting)"
    assert progress_line(svc("migrate", S.EXITED, port=None, reason="exited with code 0")) == "migrate: exited with code 0"
    # a reason that does not start with the state keeps both
    assert progress_line(svc("db", S.FAILED, reason="exited with code 4")) == "db: failed (exited with code 4)"
    assert progress_line(svc("db", S.READY, ready_duration=0.5)) == "db: ready in 0.50s (port 8000)"


def test_a_conflict_is_said_once_and_shows_no_log_of_an_earlier_run() -> None:
    tails = {"saleor": ["old line from yesterday"], "shop": ["old shop line"], "db": ["Traceback: boom"]}
    report = failure_report(
        [
            svc("saleor", S.CONFLICT, port=8003, conflict_pid=42, conflict_cmdline="python3 -m http.server 8003",
                reason="port 8003 is held by pid 42 (me): python3 -m http.server 8003"),
            svc("shop", S.WAITING, reason="waiting for saleor (conflict)", blocked_by=("saleor",)),
            svc("db", S.FAILED, reason="exited with code 1"),
            svc("ok", S.READY),
        ],
        tails,
    )
    lines = report.splitlines()
    assert lines[0] == "✗ saleor: conflict: port 8003 is held by pid 42: python3 -m http.server 8003"
    assert report.count("held by pid 42") == 1
    assert "✗ shop: waiting for saleor (conflict)" in lines  # not "waiting: waiting for"
    # nothing of saleor or shop ran for this `up`: their logs are from before and would mislead
    assert "old line from yesterday" not in report and "old shop line" not in report
    # a service that ran and failed does show its last lines
    assert "✗ db: failed: exited with code 1" in lines and "    Traceback: boom" in lines
    assert "ok" not in report


def test_fit_columns_keeps_the_required_whole_and_adds_the_rest_by_priority() -> None:
    from supervisord_lite.cli.render import fit_columns

    header = ("NAME", "PORT", "STATE", "CPU", "URL", "TIER", "REASON")
    rows = [("business-directory", "43010", "conflict", "1.5%", "http://localhost:43010/admin", "frontend",
             "held by pid 42: python3 -m http.server 43010")]
    priority = ("CPU", "REASON", "URL", "TIER")
    required = 18 + 2 + 5 + 2 + 8  # the widest values and the gaps between them
    for width in range(required, 130):
        fit = fit_columns(header, rows, width, priority, flexible=("REASON",))
        used = dict(zip((header[i] for i in fit.shown), fit.widths))
        assert (used["NAME"], used["PORT"], used["STATE"]) == (18, 5, 8), width
        assert sum(fit.widths) + 2 * (len(fit.widths) - 1) <= width
        assert sorted(fit.left_out + list(used)) == sorted(header)
        if "CPU" not in used:  # the first wanted goes in first
            assert len(used) == 3
        if "REASON" in used:
            assert 16 <= used["REASON"] <= len(rows[0][6])
    # the URL (28) does not fit after the reason's 16 at 66 columns, the tier (8) does: skipped, not stopped
    fit = fit_columns(header, rows, required + 6 + 18 + 10, priority, flexible=("REASON",))
    assert fit.left_out == ["URL"]
    # narrower than the required: only the first is cut, and nothing optional is shown
    fit = fit_columns(header, rows, 30, priority, flexible=("REASON",))
    assert [header[i] for i in fit.shown] == ["NAME", "PORT", "STATE"] and fit.widths == [18 - 5, 5, 8]
    # no width (a pipe, a file): everything, at its widest
    assert fit_columns(header, rows, None, priority).left_out == []


def test_cpu_percent_has_a_figure_from_the_first_sample_then_follows_the_interval() -> None:
    from supervisord_lite.core.cpurate import CpuTracker
    from supervisord_lite.core.snapshot import SupervisorSnapshot

    def snap(pid: int, cpu: float, started: float | None = 100.0) -> SupervisorSnapshot:
        s = svc("api", S.READY, pid=pid, started_at=started, cpu_seconds=cpu)
        return SupervisorSnapshot(name="x", manifest="m", pid=1, started_at=0.0, services=(s,))

    tracker = CpuTracker(min_gap=1.0)
    assert tracker.update(snap(1, 5.0), now=110.0) == {"api": 50.0}  # first sight: the average since it started
    assert tracker.update(snap(1, 5.1), now=110.5) == {"api": 50.0}  # too close: the last figure stays
    assert tracker.update(snap(1, 5.2), now=112.0) == {"api": pytest.approx(10.0)}  # over the last interval
    assert tracker.update(snap(2, 0.3, started=112.0), now=113.0) == {"api": pytest.approx(30.0)}  # restarted
    assert tracker.update(snap(3, 0.1, started=None), now=114.0) == {}  # no start time: no figure yet
