"""The control socket: protocol, permissions, peer credentials, hostile input."""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from supervisord_lite.daemon import control_server
from supervisord_lite.core import paths
from supervisord_lite.core import protocol
from supervisord_lite.cli import client, transport
from tests.conftest import raw_exchange


class EchoHandler:
    """A stand-in for the daemon: echoes, streams, or fails on demand."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def handle(self, op: str, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(op)
        if op == "ping":
            yield {"done": True, "ok": True, "result": {"pid": os.getpid()}}
        elif op == "count":
            for i in range(int(args["n"])):
                yield {"progress": i}
            yield {"done": True, "ok": True, "result": "counted"}
        elif op == "boom":
            raise RuntimeError("kaboom")
        else:
            raise protocol.ControlError(f"unknown request {op!r}", 2)


def short_sock(tmp_path: Path) -> Path:
    return paths.socket_path_for(tmp_path / "state")


async def _with_server(tmp_path: Path, body: Any) -> EchoHandler:
    handler = EchoHandler()
    path = short_sock(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(lambda task_status: control_server.serve(path, handler, task_status=task_status))
        try:
            await anyio.to_thread.run_sync(body, path)
        finally:
            tg.cancel_scope.cancel()
    return handler


@pytest.mark.anyio
async def test_request_answer_and_streaming(tmp_path: Path) -> None:
    def body(path: Path) -> None:
        assert transport.call(path, "ping")["pid"] == os.getpid()
        messages = list(transport.request(path, "count", {"n": 3}))
        assert [m.get("progress") for m in messages[:-1]] == [0, 1, 2]
        assert messages[-1] == {"done": True, "ok": True, "result": "counted"}
        with pytest.raises(protocol.ControlError, match="unknown request 'nope'") as err:
            transport.call(path, "nope")
        assert err.value.code == 2
        with pytest.raises(protocol.ControlError, match="internal error: kaboom"):
            transport.call(path, "boom")
        assert client.is_serving(path)  # still serving after a handler blew up

    handler = await _with_server(tmp_path, body)
    assert handler.calls[:2] == ["ping", "count"]


@pytest.mark.anyio
async def test_socket_is_private_and_removed_on_exit(tmp_path: Path) -> None:
    path = short_sock(tmp_path)

    def body(p: Path) -> None:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600

    await _with_server(tmp_path, body)
    assert not path.exists()


@pytest.mark.anyio
async def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = short_sock(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))  # a socket file nobody listens on, as a crashed daemon leaves
    dead.close()
    await _with_server(tmp_path, lambda p: transport.call(p, "ping"))


@pytest.mark.anyio
async def test_hostile_input_gets_an_error_and_the_server_keeps_serving(tmp_path: Path) -> None:
    def body(path: Path) -> None:
        answers = {
            "garbage": raw_exchange(path, os.urandom(4096).replace(b"\n", b"x") + b"\n"),
            "not json": raw_exchange(path, b"{op: ping}\n"),
            "not an object": raw_exchange(path, b"[1,2]\n"),
            "no op": raw_exchange(path, b'{"args": {}}\n'),
            "huge line": raw_exchange(path, b"x" * (protocol.MAX_REQUEST + 10)),
            "cut off": raw_exchange(path, b'{"op": "pi'),
        }
        for what, raw in answers.items():
            if what == "cut off":
                assert raw == b"", what  # half a request: nothing to answer, connection closed
                continue
            message = json.loads(raw.splitlines()[0])
            assert message["ok"] is False and message["code"] == 2, (what, message)
        idle = []
        for _ in range(200):  # many idle connections do not starve real clients
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(path))
            idle.append(s)
        try:
            assert transport.call(path, "ping")["pid"] == os.getpid()
        finally:
            for s in idle:
                s.close()
        assert client.is_serving(path)

    await _with_server(tmp_path, body)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")
@pytest.mark.anyio
async def test_another_uid_is_refused(tmp_path: Path) -> None:
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    system_python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    client = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "s.sendall(b'{\"op\": \"ping\"}\\n'); print(s.recv(4096).decode())\n"
    )
    # a folder the other user may enter, so only the socket's own mode and SO_PEERCRED stand in the way
    folder = Path(tempfile.mkdtemp(prefix="svc-peer-", dir="/tmp"))
    os.chmod(folder, 0o755)
    handler = EchoHandler()
    path = folder / "svc.sock"

    def body() -> None:
        denied = subprocess.run([system_python, "-c", client, str(path)], user=nobody.pw_uid, capture_output=True, text=True)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
        os.chmod(path, 0o666)  # open the file mode up: SO_PEERCRED still refuses the other uid
        answered = subprocess.run([system_python, "-c", client, str(path)], user=nobody.pw_uid, capture_output=True, text=True)
        message = json.loads(answered.stdout)
        assert message["ok"] is False and "permission denied" in message["error"]

    try:
        async with anyio.create_task_group() as tg:
            await tg.start(lambda task_status: control_server.serve(path, handler, task_status=task_status))
            try:
                await anyio.to_thread.run_sync(body)
            finally:
                tg.cancel_scope.cancel()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert handler.calls == []  # the refused peer never reached the handler


def test_long_state_dir_gets_a_short_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    path = paths.socket_path_for(deep)
    assert len(str(path)) < 108
    assert path == paths.socket_path_for(deep)  # client and daemon agree
