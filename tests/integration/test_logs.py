"""`svc logs` and `svc up --attach` through the real CLI, on demo stand-ins that log heartbeats."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from typing import IO

from supervisord_lite.cli.logview import colour_of
from tests.conftest import wait_until
from tests.integration.harness import SVC, Platform

LINE = re.compile(r"^(?P<name>\S+) +\| (?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<text>.*)$")
BEAT = re.compile(r"^(?P<name>\S+) +\| (?P=name): heartbeat (?P<n>\d+)$")


def _file_lines(platform: Platform, name: str) -> list[str]:
    return (platform.state_dir / "logs" / f"{name}.log").read_text().splitlines()


def _beats(platform: Platform, name: str) -> int:
    try:
        return sum(" heartbeat " in line for line in _file_lines(platform, name))
    except OSError:
        return 0


def _shown_text(file_line: str) -> str:
    """A file line as `svc logs` shows it: without its stamp, a mark without its dashes."""
    text = file_line.split(" ", 1)[1]
    if text.startswith("--- svc: ") and text.endswith(" ---"):
        text = text[len("--- svc: "):-len(" ---")]
        state, _, rest = text.partition(": ")
        return rest if rest.startswith(state) and rest else text
    return text


class Reader:
    """The lines a running CLI prints, collected by a thread so the test can wait for one."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate: Callable[[str], object], what: str, timeout: float = 30) -> str:
        found = wait_until(lambda: next((line for line in list(self.lines) if predicate(line)), None), timeout=timeout,
                           interval=0.05, what=what)
        return str(found)

    def finish(self, timeout: float = 10) -> list[str]:
        self._thread.join(timeout)
        return self.lines


def _start_cli(platform: Platform, *args: str) -> tuple[subprocess.Popen[str], Reader, Reader]:
    """The `svc` CLI in its own process group (so a test can Ctrl-C it, and only it)."""
    proc = subprocess.Popen([*SVC, args[0], "--manifest", str(platform.manifest), *args[1:]], cwd=platform.root,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    return proc, Reader(proc.stdout), Reader(proc.stderr)


def _ctrl_c(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGINT)


def _end(proc: subprocess.Popen[str], *readers: Reader) -> None:
    """Make sure the CLI is gone, and its output read to the end."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    for reader in readers:
        reader.finish()


def test_all_logs_merge_by_time_with_padded_names_and_every_option(platform: Platform) -> None:
    platform.add("db", tier="infra", port=None, args="--heartbeat 0.05")
    platform.add("api", port=None, args="--heartbeat 0.07")
    platform.add("frontend", tier="web", port=None, args="--heartbeat 0.03")
    platform.write()
    platform.svc("up", check=True)
    wait_until(lambda: all(_beats(platform, n) >= 15 for n in ("db", "api", "frontend")), timeout=30, what="heartbeats")
    platform.svc("down", check=True)  # the files stay as they are from here on
    files = {n: _file_lines(platform, n) for n in ("db", "api", "frontend")}

    everything = platform.svc("logs", "-n", "all", "--timestamps")
    assert everything.returncode == 0, everything.stderr
    assert "\x1b" not in everything.stdout  # piped: plain text
    lines = everything.stdout.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed) if not m][:3]
    assert {line.index("|") for line in lines} == {len("frontend") + 1}  # padded to the longest name
    stamps = [m["stamp"] for m in parsed if m]
    assert stamps == sorted(stamps)  # one stream in time order
    for name, file_lines in files.items():
        assert [m["text"] for m in parsed if m and m["name"] == name] == [_shown_text(f) for f in file_lines]
    switches = sum(a["name"] != b["name"] for a, b in zip(parsed, parsed[1:]) if a and b)
    assert switches > 20  # interleaved, not one service after the other
    plain = platform.svc("logs", "-n", "all").stdout.splitlines()
    assert plain == [f"{m['name'].ljust(8)} | {m['text']}" for m in parsed if m]
    for name in ("db", "api", "frontend"):  # the supervisor's lines, inline
        assert f"{name.ljust(8)} | stopping" in plain and f"{name.ljust(8)} | stopped" in plain
        assert any(line.startswith(f"{name.ljust(8)} | started pid ") for line in plain)
    assert any(re.fullmatch(r"frontend \| pid \d+ (exited with code 0|killed by SIGTERM)", line) for line in plain)

    # -n: the last N lines of each service
    last = platform.svc("logs", "-n", "3").stdout.splitlines()
    assert Counter(line.split(" ", 1)[0] for line in last) == {"db": 3, "api": 3, "frontend": 3}
    for name, file_lines in files.items():
        assert [line.split("| ", 1)[1] for line in last if line.startswith(f"{name} ")] == [_shown_text(f) for f in file_lines[-3:]]
    assert platform.svc("logs", "-n", "0").stdout == ""

    # --since: a date and time (the 10th line of db's, as the file stamps it), or a duration
    since = files["db"][9].split(" ", 1)[0]
    after = platform.svc("logs", "--since", since, "-t").stdout.splitlines()
    expected = sorted(f.split(" ", 1)[0] for fl in files.values() for f in fl if f.split(" ", 1)[0] >= since)
    assert sorted(LINE.match(line)["stamp"] for line in after) == expected  # type: ignore[index]
    assert len(after) < len(lines)
    assert len(platform.svc("logs", "--since", since, "-n", "2").stdout.splitlines()) == 6
    assert platform.svc("logs", "--since", "1h").stdout.splitlines() == plain
    assert platform.svc("logs", "--since", "0s").stdout == ""  # nothing was written since now
    bad = platform.svc("logs", "--since", "last tuesday")
    assert bad.returncode == 2 and "--since" in bad.stderr

    # selectors: a tier stands for its services; padding follows what is shown
    infra = platform.svc("logs", "infra", "-n", "all").stdout.splitlines()
    assert infra and all(line.startswith("db | ") for line in infra)
    app_and_web = platform.svc("logs", "web", "api", "-n", "1").stdout.splitlines()
    assert sorted(line.split(" ", 1)[0] for line in app_and_web) == ["api", "frontend"]
    unknown = platform.svc("logs", "fronted")
    assert unknown.returncode == 2 and 'no service named "fronted"' in unknown.stderr and 'did you mean "frontend"' in unknown.stderr
    assert platform.svc("logs", "@backend").returncode == 2


def _on_a_terminal(platform: Platform, *args: str, env: dict[str, str]) -> str:
    """What `svc ARGS` prints when its output is a terminal."""
    controller, terminal = pty.openpty()
    try:
        with subprocess.Popen([*SVC, args[0], "--manifest", str(platform.manifest), *args[1:]], cwd=platform.root,
                              stdin=subprocess.DEVNULL, stdout=terminal, stderr=subprocess.PIPE, env=env) as proc:
            os.close(terminal)
            out = b""
            while True:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the terminal's other side is closed
                    break
                if not chunk:
                    break
                out += chunk
            assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
        return out.decode()
    finally:
        os.close(controller)


def test_colours_on_a_terminal_and_never_with_no_color(platform: Platform) -> None:
    platform.add("db", tier="infra", port=None, args="--heartbeat 0.05")
    platform.add("worker", port=None, args="--heartbeat 0.05")
    platform.write()
    platform.svc("up", check=True)
    wait_until(lambda: _beats(platform, "db") >= 2 and _beats(platform, "worker") >= 2, timeout=30, what="heartbeats")
    platform.svc("down", check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")} | {"TERM": "xterm"}
    coloured = _on_a_terminal(platform, "logs", "-n", "all", env=env)
    assert f"\x1b[{colour_of('db')}mdb     |\x1b[0m " in coloured
    assert f"\x1b[{colour_of('worker')}mworker |\x1b[0m " in coloured
    assert "\x1b[2;3mstopped\x1b[0m" in coloured  # the supervisor's lines: dim italic
    assert "\x1b" not in _on_a_terminal(platform, "logs", "-n", "all", env={**env, "NO_COLOR": "1"})
    assert "\x1b" not in _on_a_terminal(platform, "logs", "-n", "all", "--no-color", env=env)


def test_follow_picks_up_new_lines_of_every_service_across_rotations(platform: Platform) -> None:
    platform.supervisor.update(log_max_bytes=2000, log_backups=2)
    platform.add("fast", port=None, args="--heartbeat 0.01")
    platform.add("slow", port=None, args="--heartbeat 0.05")
    platform.write()
    platform.svc("up", check=True)
    proc, out, err = _start_cli(platform, "logs", "-f", "-n", "0")
    try:
        log = platform.state_dir / "logs" / "fast.log"
        sizes = [log.stat().st_size]

        def rotated_thrice() -> bool:
            try:
                sizes.append(log.stat().st_size)
            except FileNotFoundError:  # between the rename and the next line
                return False
            rotations = sum(b < a for a, b in zip(sizes, sizes[1:]))
            beats = [BEAT.match(line) for line in list(out.lines)]
            return rotations >= 3 and sum(1 for m in beats if m and m["name"] == "fast") >= 200

        wait_until(rotated_thrice, timeout=60, interval=0.01, what="fast.log to rotate 3 times under `svc logs -f`")
        _ctrl_c(proc)
        assert proc.wait(30) == 0
    finally:
        _end(proc, out, err)
    beats: dict[str, list[int]] = {"fast": [], "slow": []}
    for line in out.finish():
        m = BEAT.match(line)
        if m:
            beats[m["name"]].append(int(m["n"]))
    for name, numbers in beats.items():
        assert numbers and numbers == list(range(numbers[0], numbers[0] + len(numbers))), name  # none lost, none twice
    assert len(beats["slow"]) >= 5


def test_logs_work_while_the_manifest_is_broken(platform: Platform) -> None:
    platform.add("worker", port=None, args="--heartbeat 0.05")
    platform.add("db", tier="infra", port=None, args="--heartbeat 0.05")
    platform.write()
    platform.svc("up", check=True)
    wait_until(lambda: _beats(platform, "worker") >= 3, timeout=30, what="heartbeats")
    good = platform.manifest.read_text()
    platform.manifest.write_text(good + '\n[services.broken]\ntier = "app"\nprot = 1\n')
    try:
        both = platform.svc("logs", "-n", "2")
        assert both.returncode == 0, both.stderr
        assert sorted(line.split(" ", 1)[0] for line in both.stdout.splitlines()) == ["db", "db", "worker", "worker"]
        assert "does not validate" in both.stderr
        one = platform.svc("logs", "worker", "-n", "1")
        assert one.returncode == 0 and re.fullmatch(r"worker \| worker: heartbeat \d+\n", one.stdout), one.stdout
        tier = platform.svc("logs", "infra")  # tiers come from the manifest: its problems are the answer
        assert tier.returncode == 2 and "services.broken" in tier.stderr and tier.stdout == ""
        proc, out, err = _start_cli(platform, "logs", "worker", "-f", "-n", "0")
        try:
            first = int(BEAT.match(out.wait_for(BEAT.match, "a new heartbeat")  # type: ignore[union-attr]
                                   )["n"])
            out.wait_for(lambda line: (m := BEAT.match(line)) is not None and int(m["n"]) > first + 2, "more heartbeats")
            _ctrl_c(proc)
            assert proc.wait(30) == 0
        finally:
            _end(proc, out, err)
    finally:
        platform.manifest.write_text(good)


def test_a_name_that_is_a_service_and_a_tier_is_ambiguous(platform: Platform) -> None:
    platform.add("web", tier="infra", port=None)
    platform.add("site", tier="web", port=None)
    platform.write()
    result = platform.svc("logs", "web")
    assert result.returncode == 2
    assert '"web" is both a service and a tier' in result.stderr and '"service:web"' in result.stderr, result.stderr


def test_up_attach_follows_the_logs_and_ctrl_c_stops_what_it_started(platform: Platform) -> None:
    platform.add("db", tier="infra", port=None, args="--heartbeat 0.2")
    platform.add("api", depends_on=["db"])
    platform.add("worker", port=None, args="--heartbeat 0.05", depends_on=["db"])
    platform.write()
    platform.svc("up", "db", check=True)  # running before: not this `up`'s to stop
    proc, out, err = _start_cli(platform, "up", "--attach")
    try:
        out.wait_for(lambda line: line.startswith("worker | worker: heartbeat"), "the worker's heartbeat, attached")
        assert any(re.fullmatch(r"api +\| started pid \d+: .*", line) for line in out.lines)  # what they said while starting
        _ctrl_c(proc)
        assert proc.wait(60) == 0, err.finish()
    finally:
        _end(proc, out, err)
    states = {name: s["state"] for name, s in platform.status().items()}
    assert states == {"db": "ready", "api": "stopped", "worker": "stopped"}
    lines, errors = out.finish(), "\n".join(err.finish())
    assert "3/3 services ready" in lines  # the outcome of the start, as `svc up` says it
    for name in ("api", "worker"):
        assert f"{name.ljust(6)} | stopping" in lines and f"{name.ljust(6)} | stopped" in lines
    assert "db     | stopping" not in lines
    assert re.search(r"attached to (db, api, worker|db, worker, api)", errors) and "stopped 2 services: " in errors


def test_up_attach_a_second_ctrl_c_exits_at_once_and_the_daemon_finishes(platform: Platform) -> None:
    platform.add("stubborn", port=None, args="--ignore-sigterm --heartbeat 0.1", stop_timeout="10s")
    platform.write()
    proc, out, err = _start_cli(platform, "up", "-a")
    try:
        # its first heartbeat, not the echo of its command line (which names --heartbeat):
        # only then has it set itself to ignore SIGTERM
        out.wait_for(lambda line: line.startswith("stubborn | stubborn: heartbeat"), "a heartbeat")
        _ctrl_c(proc)
        out.wait_for(lambda line: line == "stubborn | stopping", "the stop to begin")
        _ctrl_c(proc)
        assert proc.wait(30) == 130
    finally:
        _end(proc, out, err)
    assert platform.status()["stubborn"]["state"] == "stopping"  # it ignores SIGTERM: SIGKILL comes after 10 s
    assert "the daemon goes on stopping them" in "\n".join(err.finish())
    platform.wait_state("stubborn", "stopped", timeout=60)


def test_ctrl_c_while_up_attach_is_still_starting_stops_what_it_started(platform: Platform) -> None:
    platform.add("slow", args="--delay 25", ready_timeout="60s")
    platform.write()
    proc, out, err = _start_cli(platform, "up", "--attach")
    try:
        wait_until(lambda: any("slow: spawned" in line for line in _file_lines(platform, "slow")) if (
            platform.state_dir / "logs" / "slow.log").exists() else False, timeout=30, what="slow to be spawned")
        _ctrl_c(proc)
        assert proc.wait(60) == 0, err.finish()
    finally:
        _end(proc, out, err)
    assert platform.status()["slow"]["state"] == "stopped"
    assert "stopping slow" in "\n".join(err.finish())



def test_up_attach_ends_by_itself_once_what_it_follows_is_stopped_elsewhere(platform: Platform) -> None:
    platform.add("worker", port=None, args="--heartbeat 0.05")
    platform.add("once", port=None, kind="oneshot", args="--oneshot 0.1")
    platform.write()
    proc, out, err = _start_cli(platform, "up", "-a")
    try:
        out.wait_for(lambda line: line.startswith("worker | worker: heartbeat"), "a heartbeat")
        assert platform.status()["once"]["state"] == "exited"  # done, and `up -a` goes on
        assert proc.poll() is None
        platform.svc("down", "worker", check=True)  # from another terminal
        assert proc.wait(60) == 0
    finally:
        _end(proc, out, err)
    assert "nothing left to follow" in "\n".join(err.lines)
    assert "worker | stopped" in out.lines
