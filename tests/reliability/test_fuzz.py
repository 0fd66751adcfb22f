"""Fuzzing the daemon's inputs with hypothesis: the control request parser, the request
handler behind it, and the manifest loader on raw bytes.

Each may refuse its input, but only with the project's own error type (ControlError,
ManifestError) carrying a message, never with another exception: anything else would
be a traceback in the daemon's log or the user's terminal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisord_lite.core import protocol
from supervisord_lite.daemon.main import Daemon
from supervisord_lite.core.manifest import load_manifest
from supervisord_lite.core.problems import ManifestError
from supervisord_lite.runtime.supervisor import Supervisor

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
OPS = ["ping", "status", "up", "down", "restart", "reload", "shutdown", "tail", "watch", "", "nope", "__init__", "handle"]
NAMES = st.sampled_from(["api", "old", "off", "nope", "", "../x", "../../etc/passwd"])
ARGS = st.fixed_dictionaries(
    {},
    optional={
        "names": st.lists(NAMES, max_size=3) | JSON,
        "name": st.just("api") | NAMES | JSON,
        "n": st.integers() | JSON,
        "wait": JSON,
        "usage": JSON,
        "dependents": JSON,
        "heartbeat": st.floats(allow_nan=True, allow_infinity=True) | JSON,
        "x": JSON,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_parse_request_on_random_bytes_raises_only_control_error(line: bytes) -> None:
    try:
        op, args = protocol.parse_request(line)
    except protocol.ControlError as exc:
        assert exc.code == 2 and str(exc).startswith("invalid request")
        return
    assert isinstance(op, str) and op and isinstance(args, dict)


@settings(max_examples=400, deadline=None)
@given(st.one_of(JSON, st.fixed_dictionaries({"op": JSON | st.sampled_from(OPS)}, optional={"args": JSON | ARGS})))
def test_parse_request_on_any_json_raises_only_control_error(message: Any) -> None:
    for line in (json.dumps(message).encode(), json.dumps(message).encode()[:-1]):  # whole, and cut short
        try:
            op, args = protocol.parse_request(line)
        except protocol.ControlError as exc:
            assert exc.code == 2 and str(exc)
            continue
        assert isinstance(op, str) and isinstance(args, dict)


def test_parse_request_refuses_json_nested_past_the_recursion_limit() -> None:
    deep = b'{"op": "status", "args": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}"
    with pytest.raises(protocol.ControlError, match="nested too deeply") as err:
        protocol.parse_request(deep)
    assert err.value.code == 2


@pytest.fixture(scope="module")
def inert_manifest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A manifest whose services never run (disabled, deprecated): the handler can be
    driven with any request without starting a process."""
    root = tmp_path_factory.mktemp("fuzz")
    doc = {
        "supervisor": {"name": "fuzz", "metrics": ""},
        "services": {
            "api": {"command": "true", "status": "disabled"},
            "old": {"command": "true", "status": "deprecated", "replaced_by": "api"},
            "off": {"command": "true", "status": "disabled", "depends_on": ["api"]},
        },
    }
    path = root / "svc.toml"
    path.write_text(tomli_w.dumps(doc))
    yield path


async def _drive(manifest_path: Path, op: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    supervisor = Supervisor(load_manifest(manifest_path))
    daemon = Daemon(manifest_path, supervisor)
    out: list[dict[str, Any]] = []
    with anyio.fail_after(5):
        stream = daemon.handle(op, args)
        try:
            async for message in stream:
                out.append(message)
                if "progress" in message and op == "watch":
                    break  # an endless stream by design: one message is enough
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("op", OPS)
@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=ARGS)
def test_request_handler_refuses_bad_requests_only_with_control_error(inert_manifest: Path, op: str, args: dict[str, Any]) -> None:
    try:
        messages = anyio.run(_drive, inert_manifest, op, args)
    except protocol.ControlError as exc:
        assert exc.code in (1, 2) and str(exc)
        return
    assert messages, f"{op} {args} answered nothing"
    last = messages[-1]
    assert last.get("done") or (op == "watch" and "progress" in last)
    json.dumps(messages, default=str)  # every answer can be sent


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_manifest_loader_on_raw_bytes_raises_only_manifest_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "svc.toml"
    path.write_bytes(data)
    try:
        load_manifest(path)
    except ManifestError as exc:
        assert exc.problems and all(str(p).startswith(str(path)) for p in exc.problems)
