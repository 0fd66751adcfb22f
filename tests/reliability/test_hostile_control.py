"""The real daemon's control socket under hostile input.

Random bytes, a 10 MB line, invalid JSON, requests of the wrong shape, a request cut
off halfway, a thousand connections opened and left idle: the daemon answers with an
error or closes the connection, never crashes, and never stops supervising (a service
SIGKILLed afterwards is still restarted). The raw server's own tests are in
tests/integration/test_control.py; these drive the daemon the CLI talks to.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest

from supervisord_lite.core import paths
from supervisord_lite.cli import transport
from tests.conftest import raw_exchange as exchange
from tests.conftest import wait_until
from tests.integration.harness import SVC, Platform
from tests.reliability.conftest import daemon_usage


def assert_refused_cleanly(what: str, raw: bytes) -> None:
    """Nothing (closed), or JSON lines ending in a refusal that is ours, not a crash."""
    if not raw:
        return
    lines = raw.splitlines()
    messages = [json.loads(line) for line in lines]
    last = messages[-1]
    assert last["done"] is True, (what, last)
    if last["ok"] is False:
        assert last["code"] in (1, 2) and last["error"], (what, last)
        assert "internal error" not in last["error"], (what, last)


def test_hostile_requests_get_an_error_or_a_close_and_supervision_goes_on(platform: Platform) -> None:
    platform.add("api")
    platform.add("worker", port=None)
    platform.write()
    platform.svc("up", check=True)
    daemon = platform.daemon_pid()
    sock = paths.socket_path_for(platform.state_dir)
    rng = random.Random(5)

    payloads: dict[str, tuple[bytes, bool]] = {
        **{f"random bytes {i}": (rng.randbytes(rng.randint(1, 8192)), True) for i in range(8)},
        "random bytes with a newline": (rng.randbytes(2000) + b"\n", True),
        "10 MB line": (b"x" * (10 * 1024 * 1024) + b"\n", True),
        "10 MB of JSON without newline": (b'{"op": "status", "args": {"x": "' + b"y" * (10 * 1024 * 1024), True),
        "invalid JSON": (b"{op: status}\n", True),
        "a JSON array": (b'["status"]\n', True),
        "op not a string": (b'{"op": 7}\n', True),
        "args not an object": (b'{"op": "status", "args": [1]}\n', True),
        "unknown op": (b'{"op": "rm -rf /"}\n', True),
        "private method as op": (b'{"op": "_progress"}\n', True),
        "names not a list": (b'{"op": "up", "args": {"names": 5}}\n', True),
        "unknown service": (b'{"op": "restart", "args": {"names": ["../../etc/passwd"]}}\n', True),
        "tail with a bad count": (b'{"op": "tail", "args": {"name": "api", "n": "all"}}\n', True),
        "watch with a bad heartbeat": (b'{"op": "watch", "args": {"heartbeat": -1}}\n', True),
        "NUL bytes": (b"\0" * 100 + b"\n", True),
        "invalid UTF-8": (b'{"op": "\xff\xfe"}\n', True),
        "empty line": (b"\n", True),
        "cut off halfway": (b'{"op": "sta', True),
        "deeply nested": (b'{"op": "status", "args": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}\n", True),
    }
    for what, (payload, shut) in payloads.items():
        raw = exchange(sock, payload, shutdown_write=shut)
        assert_refused_cleanly(what, raw)
        if what == "cut off halfway":
            assert raw == b"", "half a request gets no answer, only a close"

    assert platform.daemon_pid() == daemon and psutil.pid_exists(daemon or 0)
    status = platform.status()
    assert {s["state"] for s in status.values()} == {"ready"}
    # still supervising: a killed service comes back
    os.kill(status["api"]["pid"], signal.SIGKILL)
    wait_until(lambda: (s := platform.status()["api"])["state"] == "ready" and s["restarts"] == 1, timeout=10, what="api back")
    assert "Traceback" not in (platform.state_dir / "daemon.log").read_text()


@contextmanager
def raised_fd_limit(wanted: int) -> Iterator[None]:
    """Let this test process hold ``wanted`` descriptors (within the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard descriptor limit ({hard}) is below the {wanted} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


DAEMON_FD_LIMIT = 512  # the daemon gets fewer descriptors than there are idle connections


def test_a_thousand_idle_connections_neither_crash_nor_block_the_daemon(platform: Platform) -> None:
    platform.add("api")
    platform.write()

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (DAEMON_FD_LIMIT, DAEMON_FD_LIMIT))

    up = subprocess.run(
        [*SVC, "up", "--manifest", str(platform.manifest)], capture_output=True, text=True, timeout=60,
        cwd=platform.root, stdin=subprocess.DEVNULL, preexec_fn=limited,
    )
    assert up.returncode == 0, up.stderr
    daemon = psutil.Process(platform.daemon_pid())
    assert daemon.rlimit(psutil.RLIMIT_NOFILE) == (DAEMON_FD_LIMIT, DAEMON_FD_LIMIT)
    sock = os.fspath(paths.socket_path_for(platform.state_dir))
    before = daemon_usage(platform)

    idle: list[socket.socket] = []
    with raised_fd_limit(1200):
        try:
            for i in range(1000):
                s = socket.socket(socket.AF_UNIX)
                s.connect(sock)
                if i % 2:
                    s.sendall(b'{"op": "sta')  # half a request, then silence
                idle.append(s)
            # real clients are still answered at once, while all of them are held open
            latencies = []
            for _ in range(5):
                t0 = time.monotonic()
                transport.call(paths.socket_path_for(platform.state_dir), "status", timeout=5)
                latencies.append(time.monotonic() - t0)
            assert max(latencies) < 1.0, latencies
            assert platform.svc("status").returncode == 0
            held = daemon.num_fds()
            # idle connections beyond a quarter of its descriptors are closed, oldest first
            assert held <= before.fds + DAEMON_FD_LIMIT // 4 + 10, (before, held)
            # and it still supervises
            api = platform.status()["api"]
            os.kill(api["pid"], signal.SIGKILL)
            wait_until(lambda: (s := platform.status()["api"])["state"] == "ready" and s["pid"] != api["pid"], timeout=10, what="api back")
        finally:
            for s in idle:
                s.close()
    assert daemon.is_running()
    wait_until(lambda: daemon.num_fds() <= before.fds + 2, timeout=10, what=f"the daemon's descriptors back to {before.fds}")
    log = (platform.state_dir / "daemon.log").read_text()
    assert "Traceback" not in log
    print(f"\nidle: 1000 connections held; daemon {before.fds} fds before, {held} while held "
          f"(limit {DAEMON_FD_LIMIT}); status max {max(latencies) * 1000:.0f} ms")
