"""Security: another user cannot drive the daemon, commands never pass through a shell
unless the manifest says so, logs cannot be read outside state_dir, and the metrics
endpoint listens on loopback unless configured otherwise.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Iterator

import psutil
import pytest

from supervisord_lite.core import paths
from supervisord_lite.core import protocol
from supervisord_lite.cli import transport
from supervisord_lite.core.model import SupervisorSpec
from tests.conftest import ROOT, free_port, wait_until
from tests.integration.harness import Platform, platform_other_users_can_enter, port_accepts

PASSWD_MARK = "root:x:0:0"


@pytest.fixture
def shared_platform() -> Iterator[Platform]:
    """A platform in a folder other users may enter (pytest's tmp folders are 0700), so
    only the socket's own mode and the daemon's SO_PEERCRED check stand in their way."""
    with platform_other_users_can_enter("svc-security-") as p:
        yield p


def _python_for(user: pwd.struct_passwd) -> tuple[list[str], dict[str, str]] | None:
    """A Python interpreter ``user`` may run that imports this package (our venv may sit
    under a private home); None when there is none."""
    site = sysconfig.get_paths()["purelib"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}{os.pathsep}{site}", "HOME": "/tmp", "LANG": "C.UTF-8"}
    for python in (sys.executable, "/usr/bin/python3"):
        if not os.path.exists(python):
            continue
        try:
            probe = subprocess.run([python, "-c", "import supervisord_lite.cli"], user=user.pw_uid, group=user.pw_gid,
                                   extra_groups=[], env=env, capture_output=True, cwd="/tmp")
        except PermissionError:
            continue
        if probe.returncode == 0:
            return [python], env
    return None


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as a second user")
def test_the_real_daemon_refuses_another_user(shared_platform: Platform) -> None:
    platform = shared_platform
    platform.add("api")
    platform.write()
    os.chmod(platform.manifest, 0o644)
    platform.svc("up", check=True)
    sock = paths.socket_path_for(platform.state_dir)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    nobody = pwd.getpwnam("nobody")
    found = _python_for(nobody)
    if found is None:
        pytest.skip("no Python interpreter the nobody user can run with this package")
    python, env = found

    def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*python, "-m", "supervisord_lite", *args, "--manifest", str(platform.manifest)],
                              user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], env=env,
                              capture_output=True, text=True, timeout=30, cwd="/tmp")

    # the socket file's mode stops it first
    denied = as_nobody("status")
    assert denied.returncode == 3, denied
    assert "Permission denied" in denied.stderr and "Traceback" not in denied.stderr
    # with the file (and the private state_dir it sits in) opened up, the daemon's
    # peer-credential check still refuses, for every request
    os.chmod(platform.state_dir, 0o755)
    os.chmod(sock, 0o666)
    for args in (("status",), ("down",), ("shutdown",), ("restart", "api")):
        refused = as_nobody(*args)
        assert refused.returncode == 3, (args, refused)
        assert "permission denied: this daemon serves only its own user" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    # nothing they asked for happened
    status = platform.status()
    assert status["api"]["state"] == "ready" and status["api"]["restarts"] == 0
    assert psutil.pid_exists(platform.daemon_pid() or 0)


def test_commands_never_pass_through_a_shell(platform: Platform) -> None:
    root = platform.root
    echo = shutil.which("echo") or "/bin/echo"
    platform.services["sneaky"] = {
        "tier": "app", "kind": "oneshot",
        "command": f"{echo} hi; touch pwned1 && touch pwned2 | touch pwned3 $(touch pwned4) `touch pwned5` > pwned6 $HOME",
    }
    platform.services["sneaky-array"] = {"tier": "app", "kind": "oneshot", "command": [echo, "; touch pwned7", "$(touch pwned8)"]}
    platform.services["probed"] = {
        "tier": "app", "port": free_port(), "command": f"{sys.executable} -m supervisord_lite.demo",
        "ready": {"exec": "test -e nothing || touch pwned9"}, "ready_timeout": "1s", "failed_retry": 0,
    }
    platform.services["explicit-shell"] = {"tier": "app", "kind": "oneshot", "command": ["sh", "-c", "touch shell-asked-for"]}
    platform.write()
    result = platform.svc("up", "sneaky", "sneaky-array", "explicit-shell", "probed")
    assert result.returncode == 1  # probed's readiness command can never succeed: `test` gets four arguments
    status = platform.status()
    assert status["sneaky"]["state"] == "exited" and status["sneaky-array"]["state"] == "exited"
    assert status["probed"]["state"] == "failed"
    assert sorted(p.name for p in root.glob("pwned*")) == []
    logged = (platform.state_dir / "logs" / "sneaky.log").read_text()
    assert "hi; touch pwned1 && touch pwned2 | touch pwned3 $(touch pwned4) `touch pwned5` > pwned6 $HOME" in logged
    assert "; touch pwned7 $(touch pwned8)" in (platform.state_dir / "logs" / "sneaky-array.log").read_text()
    assert (root / "shell-asked-for").exists()  # a shell runs only when the manifest names one


def test_logs_cannot_be_read_outside_state_dir(platform: Platform) -> None:
    port = free_port()
    platform.supervisor["metrics"] = f"127.0.0.1:{port}"
    platform.supervisor["http_logs"] = True  # served at all: the names must still keep inside state_dir
    platform.add("api")
    platform.write()
    platform.svc("up", check=True)
    for name in ("../../etc/passwd", "/etc/passwd", "api/../../../../etc/passwd", "..", "../logs/api", "api.log"):
        result = platform.svc("logs", name)
        assert result.returncode == 2, (name, result)
        assert PASSWD_MARK not in result.stdout + result.stderr
        assert "no service named" in result.stderr
    with pytest.raises(protocol.ControlError) as err:
        transport.call(paths.socket_path_for(platform.state_dir), "tail", {"name": "../../etc/passwd"})
    assert err.value.code == 2
    # nor through the status page beside /metrics
    wait_until(lambda: port_accepts(port), timeout=5, what="the metrics endpoint")
    for quoted in ("..%2F..%2F..%2Fetc%2Fpasswd", "../../../etc/passwd", "%2Fetc%2Fpasswd"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/logs/{quoted}", timeout=5) as response:
                body = response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            assert exc.code in (400, 404), (quoted, exc.code)
        assert PASSWD_MARK not in body, quoted
    # a manifest cannot smuggle a path in as a service name either
    platform.manifest.write_text(platform.manifest.read_text() + '\n[services."../../etc/passwd"]\ntier = "app"\ncommand = "true"\n')
    check = platform.svc("check")
    assert check.returncode == 2 and "../../etc/passwd" in check.stdout + check.stderr


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def test_metrics_listen_on_loopback_unless_configured_otherwise(platform: Platform) -> None:
    assert SupervisorSpec().metrics.startswith("127.0.0.1:")  # the default
    port = free_port()
    platform.supervisor["metrics"] = f":{port}"  # a port alone: still loopback
    platform.add("api", port=None)
    platform.write()
    platform.svc("up", check=True)
    assert _listening_addresses(platform.daemon_pid() or 0) == {("127.0.0.1", port)}
    platform.svc("shutdown", check=True)

    # configured otherwise, it listens where it is told (another loopback address here)
    platform.supervisor["metrics"] = f"127.0.0.2:{port}"
    platform.write()
    platform.svc("up", check=True)
    assert _listening_addresses(platform.daemon_pid() or 0) == {("127.0.0.2", port)}
    with urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=5) as response:
        assert b"svc_service_state" in response.read()
