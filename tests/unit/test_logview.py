"""What `svc logs` prints: reading the daemon's log lines, merging, prefixes, colours, --since, selectors."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from supervisord_lite.cli import logview
from supervisord_lite.cli.logview import (
    LogLine,
    SelectionError,
    Style,
    colour_of,
    format_line,
    merge,
    parse_line,
    parse_lines,
    parse_since,
    select_logged,
    stamp_of,
    use_colour,
)
from supervisord_lite.runtime import logs as runtime_logs
from supervisord_lite.runtime.logs import ServiceLog, format_timestamp

ESC = "\x1b"


def test_lines_as_the_daemon_writes_them_are_read_back(tmp_path: Path) -> None:
    log = ServiceLog(tmp_path / "api.log", max_bytes=0, backups=0)
    log.write_lines(["hello world", "", "--- not ours"], when=1_700_000_000.25)
    log.mark("started pid 123: python app.py")
    log.mark("exited: exited with code 0")
    log.close()
    lines = list(parse_lines("api", (tmp_path / "api.log").read_text().splitlines()))
    assert lines[:3] == [
        LogLine("2023-11-14T22:13:20.250Z", "api", "hello world"),
        LogLine("2023-11-14T22:13:20.250Z", "api", ""),
        LogLine("2023-11-14T22:13:20.250Z", "api", "--- not ours"),
    ]
    assert [(line.text, line.mark) for line in lines[3:]] == [
        ("started pid 123: python app.py", True),
        ("exited with code 0", True),  # the state is said once
    ]
    assert logview.MARK_PREFIX == runtime_logs.MARK_PREFIX and logview.MARK_SUFFIX == runtime_logs.MARK_SUFFIX


def test_a_line_without_a_timestamp_stays_after_the_line_it_followed() -> None:
    raws = ["2026-11-29T10:00:00.000Z first", "a continuation written by hand", "2026-11-29T10:00:01.000Z second"]
    lines = list(parse_lines("api", raws))
    assert [line.stamp for line in lines] == ["2026-11-29T10:00:00.000Z", "2026-11-29T10:00:00.000Z", "2026-11-29T10:00:01.000Z"]
    assert lines[1].text == "a continuation written by hand" and not lines[1].mark
    assert parse_line("api", "2026-11-29T10:00:00.000Zglued").text == "2026-11-29T10:00:00.000Zglued"  # not a stamp
    assert parse_line("api", "2026-11-29T10:00:00.000Z --- svc:  ---").mark  # an empty mark is still one


def test_merge_orders_by_time_and_keeps_each_services_order_and_ties_stable() -> None:
    def stream(name: str, *stamps: str) -> list[LogLine]:
        return [LogLine(f"2026-11-29T10:00:0{s}Z", name, f"{name}{i}") for i, s in enumerate(stamps)]

    db = stream("db", "0.000", "2.000", "2.000", "5.000")
    api = stream("api", "1.000", "2.000", "3.000")
    web = stream("web", "0.500", "4.000")
    merged = list(merge([db, api, web]))
    assert [line.text for line in merged] == ["db0", "web0", "api0", "db1", "db2", "api1", "api2", "web1", "db3"]
    assert sorted(merged, key=lambda line: line.stamp) == merged
    assert list(merge([])) == []


def test_prefix_is_padded_to_the_longest_name_and_plain_without_colour() -> None:
    style = Style.for_names(["db", "frontend", "api"])
    assert style.width == len("frontend")
    line = LogLine("2026-11-29T10:00:00.123Z", "db", "hello")
    assert format_line(line, style) == "db       | hello"
    assert format_line(LogLine("x", "frontend", "hi"), style) == "frontend | hi"
    stamped = Style(width=8, timestamps=True)
    assert format_line(line, stamped) == "db       | 2026-11-29T10:00:00.123Z hello"
    assert format_line(LogLine("", "db", "no stamp"), stamped) == "db       | " + " " * 24 + " no stamp"
    assert format_line(line, Style(width=8, prefix=False)) == "hello"
    assert ESC not in format_line(LogLine("x", "db", "ready", mark=True), style)


def test_colours_name_and_marks_on_a_terminal() -> None:
    style = Style(width=5, colour=True)
    shown = format_line(LogLine("x", "api", "GET /"), style)
    assert shown == f"{ESC}[{colour_of('api')}mapi   |{ESC}[0m GET /"
    mark = format_line(LogLine("x", "api", "backoff: exited with code 3", mark=True), style)
    assert mark.endswith(f"{ESC}[2;3mbackoff: exited with code 3{ESC}[0m")  # dim italic: the supervisor speaking
    assert f"{ESC}[2;3m" not in format_line(LogLine("x", "api", "plain output"), style)


def test_colour_of_a_name_is_stable_across_runs_and_spread_over_the_palette() -> None:
    names = ["api", "db", "redis", "frontend", "worker", "postgres", "auth", "search", "mail", "cache", "queue", "admin"]
    here = [colour_of(n) for n in names]
    assert all(c in logview.PALETTE for c in here)
    assert 31 not in here and 91 not in here  # red means trouble
    assert len(set(here)) >= 4
    code = f"from supervisord_lite.cli.logview import colour_of; print([colour_of(n) for n in {names!r}])"
    for seed in ("1", "2"):  # Python's str hash is salted per process; the colour must not be
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert out.strip() == str(here)


@pytest.mark.parametrize(
    ("isatty", "environ", "expected"),
    [
        (True, {}, True),
        (True, {"TERM": "xterm-256color"}, True),
        (False, {}, False),  # piped: plain text
        (True, {"NO_COLOR": "1"}, False),
        (True, {"NO_COLOR": "anything"}, False),
        (True, {"NO_COLOR": ""}, True),  # no-color.org: set and not empty
        (True, {"TERM": "dumb"}, False),
    ],
)
def test_colour_only_on_a_terminal_that_wants_it(isatty: bool, environ: dict[str, str], expected: bool) -> None:
    assert use_colour(isatty, environ) is expected


def test_stamps_compare_as_the_daemon_writes_them() -> None:
    for t in (0.0, 1_700_000_000.0, 1_700_000_000.999, 1_800_000_000.0005):
        assert stamp_of(t) == format_timestamp(t)
    assert stamp_of(1_700_000_000.5) < stamp_of(1_700_000_000.501) < stamp_of(1_700_000_001)


def test_since_takes_durations_and_dates() -> None:
    now = 1_800_000_000.0
    assert parse_since("10m", now) == now - 600
    assert parse_since("1h30m", now) == now - 5400
    assert parse_since("90", now) == now - 90  # a bare number is seconds, as in the manifest
    assert parse_since(" 500ms ", now) == now - 0.5
    assert parse_since("2026-11-29T10:00", now) == datetime(2026, 11, 29, 10, 0).timestamp()  # local time
    assert parse_since("2026-11-29", now) == datetime(2026, 11, 29).timestamp()
    assert parse_since("2026-11-29T10:00:00Z", now) == datetime(2026, 11, 29, 10, tzinfo=timezone.utc).timestamp()
    assert parse_since("2026-11-29T10:00:00.250+01:00", now) == datetime(2026, 11, 29, 9, 0, 0, 250000, tzinfo=timezone.utc).timestamp()
    for bad in ("yesterday", "-5m", "10 minutes", "", "2026-13-01"):
        with pytest.raises(ValueError, match="duration such as"):
            parse_since(bad, now)


SERVICES = {"postgres": "infra", "redis": "infra", "api": "app", "worker": "app", "web": "web"}


def test_without_the_manifest_a_log_file_is_enough_to_select_a_service() -> None:
    assert select_logged([], ["worker", "api"]) == ["api", "worker"]  # every log
    assert select_logged(["worker", "api", "worker"], ["api", "worker"]) == ["worker", "api"]  # as given, once
    with pytest.raises(SelectionError, match=r"no service named 'wrker' \(did you mean 'worker'\?\)"):
        select_logged(["wrker"], ["worker"])
    for hostile in ("../../etc/passwd", "api.log", "..", "api/../api", "@backend"):
        with pytest.raises(SelectionError, match="no service named"):
            select_logged([hostile], ["api"])


