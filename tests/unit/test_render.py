"""What `svc up` prints on a pipe and when it fails: no stutter, no repeats, no stale logs."""

from __future__ import annotations

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
