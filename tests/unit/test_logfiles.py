"""Reading a service's log files while the daemon's ServiceLog writes and rotates them."""

from __future__ import annotations

from pathlib import Path

from supervisord_lite.host.logfiles import LogSource, logged_services, rotated_files
from supervisord_lite.runtime.logs import ServiceLog


def _texts(lines: list[str]) -> list[str]:
    """The service's words, without the timestamp."""
    return [line.split(" ", 1)[1] for line in lines]


def _numbered(log: ServiceLog, first: int, count: int) -> None:
    for i in range(first, first + count):
        log.write(f"line {i:05d}")


def test_tail_reads_back_across_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "api.log"
    log = ServiceLog(path, max_bytes=400, backups=3)  # a dozen lines a file
    _numbered(log, 0, 40)
    log.close()
    assert [p.name for p in rotated_files(path)] == ["api.log.3", "api.log.2", "api.log.1"]
    with LogSource(path) as source:
        assert _texts(source.tail(3)) == ["line 00037", "line 00038", "line 00039"]
        wanted = [f"line {i:05d}" for i in range(40 - 25, 40)]
        assert _texts(source.tail(25)) == wanted  # more than the current file holds
        everything = _texts(list(source.history()))
        assert everything == [f"line {i:05d}" for i in range(40 - len(everything), 40)]  # the oldest rotated away
        assert len(everything) > 25
        assert _texts(source.tail(10_000)) == everything
        assert source.tail(0) == []


def test_history_skips_rotated_files_older_than_wanted(tmp_path: Path) -> None:
    path = tmp_path / "api.log"
    log = ServiceLog(path, max_bytes=400, backups=3)
    for i in range(40):
        log.write_lines([f"line {i:05d}"], when=1_800_000_000 + i)
    log.close()
    previous = Path(f"{path}.1").read_text().splitlines()
    current = path.read_text().splitlines()
    since = previous[len(previous) // 2]  # lines from the middle of NAME.log.1 on
    looked_at: list[str] = []

    def starts_before(first_line: str) -> bool:
        looked_at.append(first_line)
        return first_line < since

    with LogSource(path) as source:
        got = [line for line in source.history(starts_before) if line >= since]
    assert got == previous[len(previous) // 2:] + current
    assert looked_at == [current[0], previous[0]]  # NAME.log.2 and .3 were not needed


def test_poll_follows_through_rotations_without_losing_or_repeating_a_line(tmp_path: Path) -> None:
    path = tmp_path / "worker.log"
    log = ServiceLog(path, max_bytes=300, backups=2)
    _numbered(log, 0, 5)
    source = LogSource(path)
    _numbered(log, 5, 2)
    assert _texts(source.tail(5)) == [f"line {i:05d}" for i in range(5)]  # the history ends where following begins
    seen: list[str] = []
    rotations = 0
    for batch in range(30):  # many rotations, some between two polls, some several at once
        size = path.stat().st_size
        _numbered(log, 7 + batch * 7, 7)
        rotations += path.stat().st_size < size
        if batch % 3:
            seen += _texts(source.poll())
    seen += _texts(source.poll())
    assert rotations >= 10
    assert seen == [f"line {i:05d}" for i in range(5, 7 + 30 * 7)]
    source.close()
    log.close()


def test_poll_rereads_a_file_truncated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "worker.log"
    log = ServiceLog(path, max_bytes=300, backups=0)  # no backups: the file is started afresh
    _numbered(log, 0, 3)
    source = LogSource(path)
    seen: list[str] = []
    for i in range(3, 40):  # polled after each line: every line is read before a truncation drops it
        _numbered(log, i, 1)
        seen += _texts(source.poll())
    assert seen == [f"line {i:05d}" for i in range(3, 40)]
    # polled late: what was written before a truncation is gone, but following goes on from the
    # new start, also when the file grew back past where the last read ended
    i = 40
    while True:  # poll right after a truncation, so that the last read ends early in the file
        size = path.stat().st_size
        _numbered(log, i, 1)
        i += 1
        seen += _texts(source.poll())
        if path.stat().st_size < size:
            break
    read_up_to = path.stat().st_size
    truncated = False
    while not (truncated and path.stat().st_size > read_up_to):
        size = path.stat().st_size
        _numbered(log, i, 1)
        i += 1
        truncated = truncated or path.stat().st_size < size
    assert _texts(source.poll()) == _texts(path.read_text().splitlines())
    source.close()
    log.close()


def test_a_file_that_appears_later_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "late.log"
    source = LogSource(path)
    assert source.tail(5) == [] and list(source.history()) == [] and source.poll() == []
    log = ServiceLog(path, max_bytes=0, backups=0)
    _numbered(log, 0, 3)
    assert _texts(source.poll()) == ["line 00000", "line 00001", "line 00002"]
    source.close()
    log.close()


def test_a_line_being_written_waits_until_it_is_complete(tmp_path: Path) -> None:
    path = tmp_path / "api.log"
    path.write_bytes(b"2026-11-29T10:00:00.000Z whole\n2026-11-29T10:00:01.000Z ha")
    source = LogSource(path)
    assert _texts(source.tail(5)) == ["whole"]  # the half line belongs to what follows
    assert source.poll() == []
    with open(path, "ab") as f:
        f.write(b"lf \xff\x0cstill one line\n")
    assert _texts(source.poll()) == ["half \ufffd\x0cstill one line"]
    source.close()


def test_logged_services_are_the_log_files_only(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("api.log", "api.log.1", "db.log", ".log", "notes.txt"):
        (logs / name).write_text("x\n")
    (logs / "dir.log").mkdir()
    (logs / "link.log").symlink_to("/etc/passwd")
    assert logged_services(logs) == ["api", "db"]
    assert logged_services(tmp_path / "missing") == []
