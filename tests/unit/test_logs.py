"""ServiceLog: timestamps, rotation, tail, write errors reported once; structlog setup."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest
import structlog

from supervisord_lite.runtime.logs import ServiceLog, configure_logging, format_timestamp, get_logger

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_format_timestamp_is_utc_with_milliseconds() -> None:
    assert format_timestamp(1795650101.123456) == "2026-11-25T23:41:41.123Z"
    assert format_timestamp(0.0) == "1970-01-01T00:00:00.000Z"


def test_lines_are_timestamped_and_marks_are_supervisor_lines(tmp_path: Path) -> None:
    log = ServiceLog(tmp_path / "logs" / "api.log", max_bytes=0, backups=0)
    before = time.time()
    log.write("hello world\n")
    log.mark("started pid 123")
    log.write_lines(["a", "b\r"])
    log.close()
    lines = (tmp_path / "logs" / "api.log").read_text().splitlines()
    assert [re.sub(f"^{STAMP} ", "", line) for line in lines] == [
        "hello world",
        "--- svc: started pid 123 ---",
        "a",
        "b",
    ]
    assert all(re.match(f"^{STAMP} ", line) for line in lines)
    stamp = lines[0].split(" ", 1)[0]
    assert time.strftime("%Y-%m-%dT%H:%M", time.gmtime(before)) <= stamp[:16]


def test_tail_keeps_the_last_lines_in_memory(tmp_path: Path) -> None:
    log = ServiceLog(tmp_path / "x.log", max_bytes=0, backups=0, tail_lines=3)
    for i in range(10):
        log.write(f"line {i}")
    assert [line.split(" ", 1)[1] for line in log.tail()] == ["line 7", "line 8", "line 9"]
    assert [line.split(" ", 1)[1] for line in log.tail(2)] == ["line 8", "line 9"]
    assert log.tail(0) == []
    log.close()


def test_tail_is_the_same_before_and_after_it_fills_whatever_the_batches(tmp_path: Path) -> None:
    log = ServiceLog(tmp_path / "x.log", max_bytes=0, backups=0, tail_lines=4)
    said = lambda: [line.split(" ", 1)[1] for line in log.tail()]  # noqa: E731
    log.write_lines(["a", "b"])
    assert said() == ["a", "b"] and log.tail(5) == log.tail()
    log.mark("started pid 7")
    log.write_lines(["c", "d", "e", "f", "g"])  # one batch past the limit
    assert said() == ["d", "e", "f", "g"]
    log.mark("stopped")
    assert said() == ["e", "f", "g", "--- svc: stopped ---"]
    log.close()
    assert (tmp_path / "x.log").read_text().count("\n") == 9  # every line reached the file


def test_rotation_by_size_keeps_n_backups(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    log = ServiceLog(path, max_bytes=1000, backups=2)
    for i in range(100):  # each line is 24 (stamp) + 1 + 8 + 1 = 34 bytes: ~29 lines a file
        log.write(f"line {i:03d}")
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["svc.log", "svc.log.1", "svc.log.2"]
    for p in tmp_path.iterdir():
        assert 0 < p.stat().st_size <= 1000
    numbers = []
    for name in ["svc.log.2", "svc.log.1", "svc.log"]:
        numbers += [int(line.rsplit(" ", 1)[1]) for line in (tmp_path / name).read_text().splitlines()]
    assert numbers == list(range(numbers[0], 100)), "rotated files hold consecutive lines, newest in NAME.log"
    assert numbers[0] > 0, "the oldest lines fell off"


def test_rotation_without_backups_starts_the_file_afresh(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    log = ServiceLog(path, max_bytes=200, backups=0)
    for i in range(20):
        log.write(f"line {i:03d}")
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["svc.log"]
    assert path.stat().st_size <= 200
    assert path.read_text().splitlines()[-1].endswith("line 019")


def test_an_existing_log_is_appended_and_its_size_counts(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    path.write_text("x" * 900 + "\n")
    log = ServiceLog(path, max_bytes=1000, backups=1)
    log.write("y" * 200)
    log.close()
    assert (tmp_path / "svc.log.1").read_text() == "x" * 900 + "\n"
    assert path.read_text().endswith("y" * 200 + "\n")


def test_disk_full_is_reported_once_and_never_raises() -> None:
    errors: list[OSError] = []
    log = ServiceLog(Path("/dev/full"), max_bytes=0, backups=0, on_error=errors.append)
    for i in range(50):
        log.write(f"line {i}")
    assert len(errors) == 1
    assert "No space left" in str(errors[0])
    assert log.failing
    assert len(log.tail()) == 50, "the in-memory tail still works for failure reports"
    log.close()


def test_writes_resume_after_the_cause_goes_away(tmp_path: Path) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the log folder should be")
    errors: list[OSError] = []
    log = ServiceLog(blocker / "api.log", max_bytes=0, backups=0, on_error=errors.append)
    log.write("lost 1")
    log.write("lost 2")
    assert len(errors) == 1
    blocker.unlink()
    log.write("kept")
    assert not log.failing
    log.write("lost again?")
    log.close()
    lines = (blocker / "api.log").read_text().splitlines()
    assert "2 lines dropped after a write error" in lines[0]
    assert lines[1].endswith(" kept")
    assert len(errors) == 1


def test_a_failing_error_callback_does_not_break_writes(tmp_path: Path) -> None:
    def boom(exc: OSError) -> None:
        raise RuntimeError("callback bug")

    log = ServiceLog(Path("/dev/full"), max_bytes=0, backups=0, on_error=boom)
    log.write("x")
    log.write("y")
    log.close()


def test_configure_logging_json_when_forced() -> None:
    out = io.StringIO()
    try:
        configure_logging(json_output=True, stream=out)
        get_logger(service="api").info("spawned", pid=42)
        get_logger().debug("hidden below INFO")
        lines = out.getvalue().splitlines()
        assert len(lines) == 1
        event = json.loads(lines[0])
        assert event["event"] == "spawned" and event["service"] == "api" and event["pid"] == 42
        assert event["level"] == "info"
        assert event["timestamp"].endswith("Z")
    finally:
        structlog.reset_defaults()


def test_configure_logging_picks_json_for_a_non_terminal_stream() -> None:
    out = io.StringIO()  # isatty() is False
    try:
        configure_logging(stream=out)
        get_logger().warning("port busy", port=8000)
        assert json.loads(out.getvalue())["port"] == 8000
    finally:
        structlog.reset_defaults()


def test_configure_logging_console_renderer_for_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    try:
        configure_logging(stream=out)
        get_logger(service="db").info("ready")
        text = out.getvalue()
        assert "ready" in text and "service=db" in text
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
    finally:
        structlog.reset_defaults()
