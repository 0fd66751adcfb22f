"""`svc status --watch`: the pure formatters, then the real command
against a real daemon, through a pipe (one line per change) and through a
pseudo-terminal (the live table), killing a service and seeing the change appear.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyte
import pytest
from rich.console import Console

from supervisord_lite.core.snapshot import ServiceSnapshot, SupervisorSnapshot
from supervisord_lite.core.states import ServiceState
from supervisord_lite.cli.live import CpuTracker, change_lines, footer, order_services, status_table
from tests.conftest import wait_until
from tests.integration.harness import SVC, Platform

S = ServiceState


def snap(*services: ServiceSnapshot) -> SupervisorSnapshot:
    return SupervisorSnapshot(name="shop", manifest="/x/svc.toml", pid=1, started_at=0.0, services=services)


def svc(name: str, state: ServiceState, **kw: object) -> ServiceSnapshot:
    return ServiceSnapshot(name=name, tier=str(kw.pop("tier", "app")), port=kw.pop("port", 8000), state=state, **kw)  # type: ignore[arg-type]


# -- pure ------------------------------------------------------------------------


def test_failing_services_come_first_and_the_daemons_order_is_kept_within() -> None:
    services = [
        svc("a", S.READY), svc("b", S.STOPPED), svc("c", S.FAILED), svc("d", S.READY),
        svc("e", S.BACKOFF), svc("f", S.CONFLICT), svc("g", S.DEPRECATED), svc("h", S.STARTING),
    ]
    assert [s.name for s in order_services(services)] == ["c", "f", "e", "h", "a", "d", "b", "g"]


def render(renderable: object, width: int = 160) -> str:
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.export_text()


def test_the_table_has_every_column_and_the_footer_counts_per_state() -> None:
    now = 1_000.0
    s = snap(
        svc("api", S.READY, pid=10, started_at=now - 75, restarts=2, port_up=True, probe_latency=0.0012,
            rss_bytes=30 * 1024 * 1024, cpu_seconds=1.0, url="http://localhost:8000/"),
        svc("db", S.BACKOFF, port=5432, tier="infra", next_retry_at=now + 3, reason="exited with code 1"),
        svc("web", S.CONFLICT, port=3000, conflict_pid=4242, conflict_cmdline="python -m http.server"),
        svc("worker", S.READY, port=None, pid=11, started_at=now - 5),
    )
    text = render(status_table(s, now, {"api": 12.5}, title="shop"))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("SERVICE"))
    assert header.split() == ["SERVICE", "TIER", "PORT", "STATE", "REASON", "UPTIME", "RESTARTS", "PROBE", "CPU", "MEM", "URL"]
    rows = [line for line in lines if re.match(r"^(api|db|web|worker)\s", line)]
    assert [r.split()[0] for r in rows] == ["web", "db", "api", "worker"]  # failing first
    api = rows[2]
    for cell in ("8000", "ready", "1m15s", "2", "1.2ms", "12.5%", "30.0 MiB", "http://localhost:8000/"):
        assert cell in api, (cell, api)
    assert re.search(r"backoff\s+retry in 3s: exited with code 1\s", rows[1])  # the state, then why
    assert re.search(r"conflict\s+held by pid 4242: python -m http.server\s", rows[0])
    assert lines[-1].startswith("1 conflict · 1 backoff · 2 ready")
    assert "1 conflict" in render(footer(s))


def test_a_table_taller_than_the_screen_keeps_the_failing_rows_and_says_what_it_hides() -> None:
    services = [svc(f"ok{i}", S.READY) for i in range(30)] + [svc("bad", S.FAILED)]
    text = render(status_table(snap(*services), 0.0, {}, max_rows=5))
    rows = [line.split()[0] for line in text.splitlines() if line.startswith(("ok", "bad", "…"))]
    assert rows == ["bad", "ok0", "ok1", "ok2", "…"]
    assert "… 27 more" in text and "30 ready · 1 failed" not in text.splitlines()[1]


def test_change_lines_name_each_change_once() -> None:
    first = snap(svc("api", S.READY, pid=5, ready_duration=0.31), svc("db", S.READY, port=None))
    lines, keys = change_lines({}, first, now=0.0)
    assert [line.split(" ", 1)[1] for line in lines] == ["api: ready in 0.31s (port 8000, pid 5)", "db: ready"]
    assert change_lines(keys, first, now=1.0)[0] == []  # nothing changed, nothing printed
    second = snap(svc("api", S.BACKOFF, reason="exited with code -9", restarts=1))
    lines, keys = change_lines(keys, second, now=2.0)
    assert [line.split(" ", 1)[1] for line in lines] == ["api: backoff: exited with code -9", "db: removed from the manifest"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d ", lines[0])


def test_a_narrow_terminal_drops_whole_columns_instead_of_cutting_every_cell() -> None:
    now = 1_000.0
    s = snap(
        svc("bizosaas-postgres", S.READY, tier="infrastructure", port=45433, pid=10, started_at=now - 75,
            port_up=True, probe_latency=0.0001, rss_bytes=20 * 1024 * 1024, url="postgres://localhost:45433"),
        svc("business-directory", S.READY, tier="frontend", port=43010, pid=11, started_at=now - 5,
            url="http://localhost:43010"),
    )
    text = render(status_table(s, now, {}, width=80), width=80)
    header = next(line for line in text.splitlines() if line.startswith("SERVICE"))
    # the optional columns come in priority order (CPU, MEM, ...) while they fit; TIER and URL do not
    assert header.split() == ["SERVICE", "PORT", "STATE", "UPTIME", "RESTARTS", "PROBE", "CPU", "MEM"]
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    # names and ports whole: nothing cut to "bizosaa…" or "454…"
    assert "…" not in text
    assert "bizosaas-postgres" in text and "business-directory" in text and "45433" in text and "43010" in text
    assert text.splitlines()[-1].strip() == "too narrow for TIER, URL"
    # very narrow: SERVICE, PORT and STATE stay
    tiny = render(status_table(s, now, {}, width=36), width=36)
    assert next(line for line in tiny.splitlines() if line.startswith("SERVICE")).split() == ["SERVICE", "PORT", "STATE"]
    assert [line.split() for line in tiny.splitlines()[1:3]] == [["bizosaas-postgres", "45433", "ready"],
                                                                 ["business-directory", "43010", "ready"]]
    # narrower than the three: only the name is cut, with an ellipsis; port and state stay whole
    cut = render(status_table(s, now, {}, width=24), width=24)
    assert [line.split() for line in cut.splitlines()[1:3]] == [["bizosaas-…", "45433", "ready"], ["business-…", "43010", "ready"]]
    # wide enough: every column, no note
    wide = render(status_table(s, now, {}, width=200), width=200)
    assert "too narrow" not in wide and "postgres://localhost:45433" in wide


def test_the_reason_column_is_cut_to_fit_and_goes_before_any_name_is_cut() -> None:
    now = 1_000.0
    s = snap(
        svc("bizosaas-postgres", S.BACKOFF, port=45433, next_retry_at=now + 2,
            reason="exited with code 1: FATAL: could not open the data directory /var/lib/postgresql/15/main"),
        svc("business-directory", S.WAITING, port=43010, blocked_by=("bizosaas-postgres",),
            reason="waiting for bizosaas-postgres (backoff)"),
        svc("redis", S.READY, port=46379),
    )
    wide = render(status_table(s, now, {}, width=200), width=200)
    assert "retry in 2s: exited with code 1: FATAL: could not open the data directory /var/lib/postgresql/15/main" in wide
    assert re.search(r"^business-directory\s+app\s+43010\s+waiting\s+for bizosaas-postgres \(backoff\)\s", wide, re.M)
    # 70 columns: the reason is cut with an ellipsis to what is left; names, ports and states whole
    mid = render(status_table(s, now, {}, width=70), width=70)
    header = mid.splitlines()[0].split()
    assert "REASON" in header and "URL" not in header, mid
    backoff = next(line for line in mid.splitlines() if line.startswith("bizosaas-postgres "))
    assert re.match(r"^bizosaas-postgres\s+(app\s+)?45433\s+backoff\s+retry in 2s: e\S*…", backoff), backoff
    assert max(len(line) for line in mid.splitlines()) <= 70
    # narrower than service + port + state: the reason has gone, then the name is cut
    cut = render(status_table(s, now, {}, width=30), width=30)
    assert cut.splitlines()[0].split() == ["SERVICE", "PORT", "STATE"] and "retry" not in cut
    assert cut.splitlines()[1].split() == ["bizosaas-post…", "45433", "backoff"]
    assert cut.splitlines()[-1].startswith("too narrow for TIER, REASON")


def test_change_lines_do_not_repeat_the_state_the_reason_already_says() -> None:
    s = snap(
        svc("dep", S.WAITING, blocked_by=("never",), reason="waiting for never (failed: not ready after 1s)"),
        svc("migrate", S.EXITED, port=None, reason="exited with code 0"),
    )
    lines, _ = change_lines({}, s, now=0.0)
    assert [line.split(" ", 1)[1] for line in lines] == [
        "dep: waiting for never (failed: not ready after 1s)",
        "migrate: exited with code 0",
    ]


def test_cpu_percent_comes_from_two_samples_of_the_same_process() -> None:
    tracker = CpuTracker(min_gap=1.0)
    assert tracker.update(snap(svc("api", S.READY, pid=1, cpu_seconds=10.0)), now=100.0) == {}
    assert tracker.update(snap(svc("api", S.READY, pid=1, cpu_seconds=10.2)), now=100.5) == {}  # too close
    assert tracker.update(snap(svc("api", S.READY, pid=1, cpu_seconds=10.5)), now=102.0) == {"api": pytest.approx(25.0)}
    assert tracker.update(snap(svc("api", S.READY, pid=2, cpu_seconds=0.1)), now=103.0) == {}  # restarted: start over


# -- the real command ----------------------------------------------------------------


def started_platform(platform: Platform) -> None:
    platform.add("db", tier="infra")
    # a slow start, so the restart after a crash is on screen for a while
    platform.add("api", depends_on=["db"], args="--delay 1.5", url="http://127.0.0.1:{port}/")
    platform.write()
    platform.svc("up", check=True)


def test_watch_without_a_daemon_says_so_and_exits_3(platform: Platform) -> None:
    platform.add("api")
    platform.write()
    result = platform.svc("status", "--watch", timeout=20)
    assert result.returncode == 3
    assert "no daemon is running" in result.stderr


class Lines:
    """Reads a child's stdout in a thread; ``wait_for`` polls what arrived."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 15) -> int:
        def found() -> int | None:
            for i, line in enumerate(self.lines[after:], after):
                if re.search(pattern, line):
                    return i + 1
            return None

        return int(wait_until(found, timeout=timeout, what=f"a line matching {pattern!r} in {self.lines}"))  # type: ignore[arg-type]


def test_watch_on_a_pipe_prints_one_line_per_state_change(platform: Platform) -> None:
    started_platform(platform)
    proc = subprocess.Popen([*SVC, "status", "--watch", "-f", str(platform.manifest)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=platform.root, start_new_session=True)
    try:
        out = Lines(proc)
        seen = out.wait_for(r" api: ready in [\d.]+s \(port \d+, pid \d+\)$")
        out.wait_for(r" db: ready in ")
        before = len(out.lines)
        os.kill(platform.status()["api"]["pid"], signal.SIGKILL)
        crashed = out.wait_for(r" api: starting: restarting after: killed by SIGKILL$", after=seen)
        out.wait_for(r" api: ready in [\d.]+s \(port \d+, pid \d+, 1 restart\)$", after=crashed)
        # only api's changes were printed since the kill: db did not change
        assert not any(" db: " in line for line in out.lines[before:])
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


class Terminal:
    """A child on a pseudo-terminal of a given size; collects everything it draws."""

    def __init__(self, argv: list[str], cwd: Path, rows: int = 30, cols: int = 160) -> None:
        self.fd, child_side = pty.openpty()
        fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        try:
            self.proc = subprocess.Popen(
                argv, stdin=child_side, stdout=child_side, stderr=child_side, cwd=cwd, start_new_session=True,
                env={**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)},
            )
        finally:
            os.close(child_side)
        self.pid = self.proc.pid
        self.raw = b""
        self.status: int | None = None
        self.screen = pyte.Screen(cols, rows)  # what a terminal of that size shows
        self._stream = pyte.ByteStream(self.screen)

    def pump(self, seconds: float = 0.1) -> bool:
        """Read what the child drew within ``seconds``; False when there was nothing."""
        ready, _, _ = select.select([self.fd], [], [], seconds)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed its side
            return False
        self.raw += chunk
        self._stream.feed(chunk)
        return bool(chunk)

    def wait_screen(self, ready: Callable[[list[str]], bool], timeout: float = 20) -> list[str]:
        """The screen's lines once ``ready(lines)`` holds for them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            lines = [line.rstrip() for line in self.screen.display]
            if ready(lines):
                return lines
            self._check_alive()
        raise AssertionError("the screen never got there; it shows:\n" + "\n".join(self.screen.display))

    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def wait_for(self, pattern: str, start: int = 0, timeout: float = 15) -> int:
        """Wait until ``pattern`` is drawn after offset ``start`` of the text; the end of the match."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            match = re.compile(pattern, re.MULTILINE).search(self.text(), start)
            if match:
                return match.end()
            self._check_alive()
        raise AssertionError(f"{pattern!r} never appeared; the screen ends with:\n{self.text()[-3000:]}")

    def _check_alive(self) -> None:
        self.status = self.proc.poll()
        if self.status is not None:
            raise AssertionError(f"the watch exited ({self.status}):\n{self.text()[-3000:]}")

    def wait_exit(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.05)
            self.status = self.proc.poll()
            if self.status is not None:
                while self.pump(0.05):  # what it drew last (giving the terminal back)
                    pass
                return self.status
        raise AssertionError("the watch did not exit")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        os.close(self.fd)


def test_watch_on_a_terminal_redraws_the_table_when_a_service_crashes(platform: Platform) -> None:
    started_platform(platform)
    term = Terminal([*SVC, "status", "--watch", "-f", str(platform.manifest)], platform.root)
    try:
        row = r"^{name}\s+{tier}\s+\d+\s+{state}"
        end = term.wait_for(row.format(name="api", tier="app", state="ready"))
        term.wait_for(r"^2 ready\s+updated \d\d:\d\d:\d\d · Ctrl-C to quit", 0)
        assert "\x1b[?1049h" in term.raw.decode(errors="replace")  # the alternate screen: the shell's stays intact
        header = term.wait_for(r"^SERVICE\s+TIER\s+PORT\s+STATE\s+UPTIME\s+RESTARTS\s+PROBE\s+CPU\s+MEM\s+URL", 0)
        assert header

        os.kill(platform.status()["api"]["pid"], signal.SIGKILL)
        crashed = term.wait_for(row.format(name="api", tier="app", state="starting"), end)
        # failing first: on that frame, api's row comes right under the header, before db's
        text = term.text()
        frame = text[text.rfind("SERVICE", 0, crashed) : crashed]
        assert not re.search(r"^db\s", frame, re.MULTILINE), frame
        term.wait_for(r"^1 starting · 1 ready", crashed)
        term.wait_for(row.format(name="api", tier="app", state="ready") + r"\s+\S+\s+1\s", crashed)  # 1 restart

        os.kill(term.pid, signal.SIGINT)  # Ctrl-C
        assert term.wait_exit() == 0
        raw = term.raw.decode(errors="replace")
        assert raw.rstrip().endswith("\x1b[?1049l"), "the terminal is given back: normal screen, cursor shown"
        assert "\x1b[?25h" in raw[raw.rfind("\x1b[?25l"):]
        assert "Traceback" not in term.text()
    finally:
        term.close()


# -- what fits on screens of given sizes ----------------------------------------------

#: The demo's 14 services (config/demo.toml): names, tiers and URLs; ports from the OS.
DEMO_LIKE = [
    ("postgres", "infrastructure", "postgres://localhost:{port}"),
    ("bizosaas-postgres", "infrastructure", "postgres://localhost:{port}"),
    ("redis", "infrastructure", "redis://localhost:{port}"),
    ("saleor-redis", "infrastructure", "redis://localhost:{port}"),
    ("django-crm", "backend", "http://localhost:{port}"),
    ("fastapi-hub", "backend", "http://localhost:{port}"),
    ("wagtail-cms", "backend", "http://localhost:{port}"),
    ("saleor", "backend", "http://localhost:{port}"),
    ("client-portal", "frontend", "http://localhost:{port}"),
    ("coreldove", "frontend", "http://localhost:{port}"),
    ("bizoholic", "frontend", "http://localhost:{port}"),
    ("admin", "frontend", "http://localhost:{port}/admin"),
    ("business-directory", "frontend", "http://localhost:{port}"),
    ("super-admin", "frontend", "http://localhost:{port}"),
]


@pytest.fixture
def demo_like(platform: Platform) -> dict[str, int]:
    """A running platform shaped like the demo; ``{service: port}``."""
    platform.tiers = {"infrastructure": {"order": 0}, "backend": {"order": 1}, "frontend": {"order": 2}}
    ports = {}
    for name, tier, url in DEMO_LIKE:
        ports[name] = platform.add(name, tier=tier, url=url)
    platform.write()
    platform.svc("up", check=True)
    return ports  # type: ignore[return-value]


def service_rows(lines: list[str], ports: dict[str, int]) -> dict[str, list[str]]:
    """The table rows on screen, by the service they start with."""
    return {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in ports}


def watch_screen(platform: Platform, ports: dict[str, int], rows: int, cols: int) -> list[str]:
    """The screen of `svc status --watch` in a rows x cols terminal, once every service is
    ready and has a CPU figure on it (the first frame already does)."""
    term = Terminal([*SVC, "status", "--watch", "-f", str(platform.manifest)], platform.root, rows=rows, cols=cols)
    try:
        def settled(lines: list[str]) -> bool:
            on_screen = service_rows(lines, ports)
            return any(line.startswith("14 ready") for line in lines) and bool(on_screen) and all(
                re.search(r"\s\d+\.\d%\s", " ".join(row) + " ") for row in on_screen.values()
            )

        return term.wait_screen(settled)
    finally:
        os.kill(term.pid, signal.SIGINT)
        term.wait_exit()
        term.close()


def assert_whole(rows: dict[str, list[str]], ports: dict[str, int], header: list[str]) -> None:
    """Every row shown has the whole name, the whole port and the state."""
    where = [header.index(c) for c in ("SERVICE", "PORT", "STATE")]
    for name, cells in rows.items():
        assert [cells[i] for i in where] == [name, str(ports[name]), "ready"], cells


def test_watch_fits_a_100x12_pane_whole_names_ports_cpu_mem_and_says_what_it_hides(
    platform: Platform, demo_like: dict[str, int]
) -> None:
    lines = watch_screen(platform, demo_like, rows=12, cols=100)
    screen = "\n".join(lines)
    print(screen)  # shown when it fails
    assert lines[0].startswith("test · ") and lines[1].startswith("SERVICE ")
    assert {"PORT", "STATE", "CPU", "MEM"} <= set(lines[1].split())
    rows = service_rows(lines, demo_like)
    assert_whole(rows, demo_like, lines[1].split())
    assert all(re.fullmatch(r"\d+\.\d MiB", " ".join(cells[-2:])) for cells in rows.values()), rows
    # the rows that do not fit are counted, not cut off silently; the header stays
    more = re.search(r"^… (\d+) more \(ready\), resize or use svc status$", screen, re.MULTILINE)
    assert more, screen
    assert len(rows) + int(more.group(1)) == 14 and len(rows) >= 5
    assert lines[lines.index(more.group(0)) + 2].startswith("14 ready")
    assert re.search(r"^too narrow for \w", screen, re.MULTILINE)


def test_watch_fits_80x24_and_60x20_showing_every_service_whole(platform: Platform, demo_like: dict[str, int]) -> None:
    for rows_, cols, columns in ((24, 80, {"CPU", "MEM", "RESTARTS", "UPTIME"}), (20, 60, {"CPU", "MEM"})):
        lines = watch_screen(platform, demo_like, rows=rows_, cols=cols)
        screen = "\n".join(lines)
        print(screen)  # shown when it fails
        header = next(line for line in lines if line.startswith("SERVICE"))
        assert header.split()[:3] == ["SERVICE", "PORT", "STATE"] and columns <= set(header.split()), (cols, screen)
        rows = service_rows(lines, demo_like)
        assert sorted(rows) == sorted(demo_like), screen  # every service on screen: none hidden
        assert_whole(rows, demo_like, header.split())
        assert "more" not in screen and "…" not in "".join(" ".join(r) for r in rows.values())
        assert re.search(r"^too narrow for .*URL", screen, re.MULTILINE), screen
