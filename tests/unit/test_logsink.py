"""The daemon's own log never raises: /dev/full (ENOSPC on every write) stands in for a
full disk, a datagram socket bound by the test for syslog."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from supervisord_lite.runtime.logs import configure_logging
from supervisord_lite.runtime.logsink import FallbackSink


@pytest.fixture
def syslog(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "log.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield path, sock
    finally:
        sock.close()


def test_lines_a_full_disk_refuses_go_to_syslog_and_the_log_says_so_when_it_works_again(
    tmp_path: Path, syslog: tuple[str, socket.socket]
) -> None:
    path, receiver = syslog
    full = open("/dev/full", "w")  # noqa: SIM115
    good = open(tmp_path / "daemon.log", "w")  # noqa: SIM115
    target: list[Any] = [full]
    sink = FallbackSink(lambda: target[0], syslog_path=path)
    try:
        for i in range(3):
            assert sink.write(json.dumps({"event": f"line {i}"}) + "\n") > 0  # never raises
        first = receiver.recv(70000).decode()
        assert first.startswith("<28>svc-daemon[") and "cannot write the daemon log to stderr" in first
        assert "No space left on device" in first
        diverted = [receiver.recv(70000).decode() for _ in range(3)]
        assert [json.loads(d.split("]: ", 1)[1])["event"] for d in diverted] == ["line 0", "line 1", "line 2"]
        assert (sink.diverted, sink.lost) == (3, 0)

        target[0] = good  # space came back
        sink.write(json.dumps({"event": "back"}) + "\n")
        lines = (tmp_path / "daemon.log").read_text().splitlines()
        note = json.loads(lines[0])
        assert note["level"] == "warning"
        assert note["event"] == (
            "3 log lines could not be written here (OSError: [Errno 28] No space left on device); "
            "3 went to syslog, 0 were lost"
        )
        assert json.loads(lines[1])["event"] == "back" and len(lines) == 2
        assert sink.failure is None and (sink.diverted, sink.lost) == (0, 0)
    finally:
        sink.close()
        full.close()
        good.close()


def test_without_syslog_lines_are_counted_as_lost(tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        sink = FallbackSink(lambda: full, syslog_path=str(tmp_path / "no-syslog-here"))
        sink.write("2026-11-25 [info     ] one\n")
        sink.write("2026-11-25 [info     ] two\n")
        assert (sink.diverted, sink.lost) == (0, 2)
    out = tmp_path / "out.log"
    with open(out, "w") as good:
        sink._target = lambda: good
        sink.write("2026-11-25 [info     ] three\n")
    note, line = out.read_text().splitlines()
    assert note.startswith("[warning  ] 2 log lines could not be written here") and note.endswith("0 went to syslog, 2 were lost")
    assert line.endswith("three")


def test_a_closed_stream_is_survived_too(tmp_path: Path) -> None:
    closed = open(tmp_path / "x", "w")  # noqa: SIM115
    closed.close()
    sink = FallbackSink(lambda: closed, syslog_path=str(tmp_path / "none"))
    sink.write("a line\n")
    assert isinstance(sink.failure, ValueError) and sink.lost == 1


def test_a_daemon_log_call_on_a_full_disk_does_not_raise() -> None:
    with open("/dev/full", "w") as full:
        configure_logging(json_output=True, stream=full)
        try:
            log = structlog.get_logger("daemon")
            log.info("daemon ready", pid=1)
            try:
                raise OverflowError("boom")
            except OverflowError:
                log.exception("reload failed")
        finally:
            structlog.reset_defaults()
