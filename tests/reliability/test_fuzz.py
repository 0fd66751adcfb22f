"""Fuzzing the daemon's inputs with hypothesis: the control request parser, the request
handler behind it, and the manifest loader on raw bytes, on arbitrary TOML documents
and on mutations of a real manifest; and the loader's cost on pathological 1 MiB files.

Each may refuse its input, but only with the project's own error type (ControlError,
ManifestError) carrying a message, never with another exception: anything else would
be a traceback in the daemon's log or the user's terminal, or a reload that ends the
daemon.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
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
from supervisord_lite.core.services import SERVICE_KEYS
from supervisord_lite.runtime.supervisor import Supervisor
from tests.conftest import ROOT

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


def _load_refuses_only_with_manifest_error(path: Path) -> None:
    try:
        load_manifest(path)
    except ManifestError as exc:
        assert exc.problems and all(str(p).startswith(str(path)) and p.message for p in exc.problems)


# Bytes that mean something to TOML, to the text scan and to the value parsers.
_TOKENS = [
    b"[", b"]", b"[[", b"]]", b"{", b"}", b"=", b",", b".", b'"', b"'", b'"""', b"'''", b"#", b"\\", b"\n",
    b"\r\n", b" ", b"\x00", b"\\u0000", b"services", b"api", b"command", b"env", b"port", b"ready", b"log",
    b"1", b"9" * 400, b"0x" + b"f" * 300, b"1e308", b"inf", b"nan", b"-", b"GiB", b"720h", b"\xff", b"\xc3\xa9",
    b"[" * 40, b".a" * 30, b"{port}", b"{", b"A=B",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_TOKENS) | st.binary(max_size=8), max_size=80).map(b"".join))
def test_manifest_loader_on_token_soup_raises_only_manifest_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "svc.toml"
    path.write_bytes(data)
    _load_refuses_only_with_manifest_error(path)


_TEXT = st.text(max_size=12) | st.sampled_from(["", "x" * 70, "{port}", "{name}", "a\x00b", "A=B", "/h p", "9" * 400])
_SCALAR = st.one_of(
    _TEXT,
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(),
    st.sampled_from(["1s", "721h", "1TiB", "9" * 400 + "GiB", "SIGTERM", "3000-3099", "(a+)+$"]),
)
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(SERVICE_KEYS) | _TEXT, inner, max_size=4),
    max_leaves=30,
)
_SERVICE = st.dictionaries(st.sampled_from(SERVICE_KEYS) | _TEXT, _VALUE, max_size=8)


def _nested(depth: int, leaf: object) -> object:
    for _ in range(depth):
        leaf = [leaf] if depth % 2 else {"a": leaf}
    return leaf


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    services=st.dictionaries(_TEXT | st.sampled_from(["api", "db", "a" * 300]), _SERVICE | _VALUE, max_size=4),
    supervisor=st.dictionaries(st.sampled_from(["name", "state_dir", "metrics", "probe_interval", "log_max_bytes",
                                                "log_backups"]) | _TEXT, _VALUE, max_size=4),
    extra=st.dictionaries(_TEXT, _VALUE, max_size=2),
    depth=st.integers(0, 40),
)  # fmt: skip
def test_manifest_loader_on_arbitrary_toml_documents_raises_only_manifest_error(
    tmp_path: Path, services: dict[str, Any], supervisor: dict[str, Any], extra: dict[str, Any], depth: int
) -> None:
    document = {"supervisor": supervisor, "services": services, **extra, "deep": _nested(depth, 1)}
    try:
        text = tomli_w.dumps(document)
    except (TypeError, ValueError):
        return  # not representable in TOML (NaN keys, integers beyond Python's 4300 digits, ...)
    path = tmp_path / "svc.toml"
    path.write_text(text)
    _load_refuses_only_with_manifest_error(path)


_NASTY = [
    "[" * 200, "x = " + "[" * 20 + "]" * 20, "ready_timeout = " + "9" * 400, 'log_max_bytes = "' + "9" * 400 + 'GiB"',
    "log_backups = 100000000", "[" + ".".join(["a"] * 200) + "]", ".".join(["k"] * 200) + " = 1",
    'command = "a\\u0000b"', 'env = { "A=B" = "c" }', "[services." + "n" * 300 + "]", "port = 0x" + "f" * 40,
    'ready = { log = "(" }', 'cwd = "' + "d" * 300 + '"', 'user = "4294967295"', "max_memory = 1e400",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(["replace", "insert", "delete", "nasty", "duplicate"]), st.integers(0, 10**6),
                  st.binary(min_size=1, max_size=4), st.sampled_from(_NASTY)),
        min_size=1, max_size=6,
    )
)  # fmt: skip
def test_mutations_of_a_real_manifest_raise_only_manifest_error(
    tmp_path: Path, edits: list[tuple[str, int, bytes, str]]
) -> None:
    data = bytearray((ROOT / "config" / "bizosaas.toml").read_bytes())
    for kind, where, some_bytes, nasty in edits:
        at = where % (len(data) + 1)
        if kind == "replace":
            data[at : at + len(some_bytes)] = some_bytes
        elif kind == "insert":
            data[at:at] = some_bytes
        elif kind == "delete":
            del data[at : at + len(some_bytes) * 8]
        elif kind == "nasty":  # at the start of a line, where a key or header goes
            line_start = data.rfind(b"\n", 0, at) + 1
            data[line_start:line_start] = nasty.encode() + b"\n"
        else:
            data[at:at] = data[at : at + 200]
    path = tmp_path / "svc.toml"
    path.write_bytes(bytes(data))
    _load_refuses_only_with_manifest_error(path)


# --------------------------------------------------------------------------- pathological 1 MiB files

_MiB = 1 << 20


def _fill(unit: str, head: str = "", tail: str = "") -> str:
    return head + unit * ((_MiB - len(head) - len(tail)) // len(unit)) + tail


def _lines(make: Any) -> str:
    out, size, i = [], 0, 0
    while (line := make(i)) and size + len(line) <= _MiB:
        out.append(line)
        size += len(line)
        i += 1
    return "".join(out)


_FULL_SERVICE = """[services.s{i:04d}]
title = "Service number {i}"
description = "A service of the platform: it serves requests, keeps some state on disk, and has a description."
port = {port}
url = "http://localhost:{{port}}/"
command = ["python3", "-m", "http.server", "{{port}}", "--bind", "127.0.0.1", "--directory", "/srv/{{name}}"]
ready = {{ http = "/health", timeout = "2s", log = "listening on .* port [0-9]+" }}
health = {{ tcp = true, http = "/live" }}
ready_timeout = "60s"
probe_interval = "5s"
depends_on = [{deps}]
restart = "always"
backoff = {{ first = "1s", max = "1m" }}
env = {{ PORT = "{{port}}", NAME = "{{name}}", LOG_LEVEL = "info", DATA = "{{state_dir}}/{{name}}" }}
cwd = "apps/s{i:04d}"
stop_signal = "SIGINT"
stop_timeout = "20s"
max_memory = "512MiB"
watch = ["apps/s{i:04d}/**/*.py"]
"""

PATHOLOGICAL = {
    "1 MiB of opening brackets": _fill("[", "x = "),
    "20,000-part dotted header (40 KB)": "[" + ".".join(["a"] * 20_000) + "]\nx = 1\n",
    "dotted key of 1 MiB": _fill("a.", "", "a = 1\n"),
    "one array of 500,000 integers": _fill("1,", "x = [", "]\n"),
    "95,000 table headers": _lines(lambda i: f"[t{i:07d}]\n"),
    "1,700 services of unknown keys": _lines(
        lambda i: (f"[services.s{i // 30}]\n" if i % 30 == 0 else "") + f"unknown_{i:07d} = 1\n"
    ),
    "1,000 services, misspelt long dependencies": _lines(
        lambda i: f'[services.s{i:04d}{"x" * 55}]\ncommand = "x"\n'
        f'depends_on = ["d{i:04d}{"y" * 55}", "e{i:04d}{"z" * 55}"]\n'
        if i < 1000
        else f"# {'c' * 60}\n"
    ),
    "8 commands of 60,000 words": _lines(lambda i: f'[services.s{i}]\ncommand = "{"a " * 60_000}"\n'),
    "ready.log patterns of 1,022 characters": _lines(
        lambda i: f"[services.s{i}]\ncommand = 'x'\nready = {{ log = '{'(?:a|b)' * 146}' }}\n"
    ),
    "strings with escapes": _fill('"\\u0041\\n",', "x = [", "]\n"),
    "comments full of brackets (valid)": _fill("# [[[ {{{ === ... \n"),
    "1,000 full services (valid)": _lines(
        lambda i: _FULL_SERVICE.format(i=i, port=3000 + i, deps=f'"s{i - 1:04d}"' if i else "") if i < 1000 else ""
    ),
    "30 services of 990 env keys (valid)": _lines(
        lambda i: (f"[services.s{i // 990}]\ncommand = 'x'\n[services.s{i // 990}.env]\n" if i % 990 == 0 else "")
        + f"V{i:07d} = 'value {i}'\n" if i < 29_700 else ""
    ),
}  # fmt: skip

_MEASURE = textwrap.dedent(
    """
    import json, re, sys, time, tracemalloc
    from pathlib import Path
    from supervisord_lite.core.manifest import check_manifest
    path = Path(sys.argv[1])
    wall, cpu = time.perf_counter(), time.process_time()
    manifest, problems = check_manifest(path)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # VmHWM: this process's peak RSS (ru_maxrss may still count the parent's pages from before exec)
    rss_mib = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024
    tracemalloc.start()
    check_manifest(path)
    traced_mib = tracemalloc.get_traced_memory()[1] / 2**20
    print(json.dumps({"wall": wall, "cpu": cpu, "rss_mib": rss_mib, "traced_mib": traced_mib,
                      "loaded": manifest is not None, "first": str(problems[0]) if problems else ""}))
    """
)


@pytest.mark.parametrize("shape", list(PATHOLOGICAL))
def test_a_pathological_manifest_is_checked_fast_and_small(tmp_path: Path, shape: str) -> None:
    """A manifest of up to 1 MiB of any shape is checked in well under a second of CPU
    and a few MiB. Measured in a fresh process: wall time (bounded at 10 s, ten times
    the promise, for a loaded CI machine), CPU time, peak RSS of the whole process
    (the interpreter included) and the loader's own peak allocations."""
    text = PATHOLOGICAL[shape]
    path = tmp_path / "svc.toml"
    path.write_text(text)
    assert len(text.encode()) <= _MiB
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    print(
        f"{shape}: {len(text) // 1024} KiB, wall {figures['wall']:.2f} s, cpu {figures['cpu']:.2f} s, peak RSS "
        f"{figures['rss_mib']:.0f} MiB, loader peak {figures['traced_mib']:.1f} MiB; {figures['first'][:100]}"
    )
    assert figures["wall"] < 10
    assert figures["rss_mib"] < 200
    assert figures["traced_mib"] < 100
    assert figures["loaded"] == shape.endswith("(valid)"), figures["first"]


_FIND_SOCKET = textwrap.dedent(
    """
    import json, re, sys, time
    from pathlib import Path
    from supervisord_lite.cli.client import socket_for_path
    began, cpu = time.monotonic(), time.process_time()
    socket_for_path(Path(sys.argv[1]))
    wall, cpu = time.monotonic() - began, time.process_time() - cpu
    # VmHWM: this process's peak RSS (ru_maxrss may still count the parent's pages from before exec)
    rss_mib = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024
    print(json.dumps({"wall": wall, "cpu": cpu, "rss_mib": rss_mib}))
    """
)


@pytest.mark.parametrize("shape", list(PATHOLOGICAL))
def test_finding_the_daemon_of_a_pathological_manifest_stays_fast_and_small(tmp_path: Path, shape: str) -> None:
    """`svc status` and `svc down` find the daemon's socket from the manifest's
    ``[supervisor]`` table without the loader, within the same bounds: no shape makes
    the lookup parse for seconds or take hundreds of MiB (tomllib alone ran past a minute
    on the dotted key of 1 MiB). Wall time bounded at 10 s, to catch only a stall."""
    path = tmp_path / "svc.toml"
    path.write_text(PATHOLOGICAL[shape])
    done = subprocess.run([sys.executable, "-c", _FIND_SOCKET, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    print(f"{shape}: wall {figures['wall']:.2f} s, cpu {figures['cpu']:.2f} s, peak RSS {figures['rss_mib']:.0f} MiB")
    assert figures["wall"] < 10
    assert figures["rss_mib"] < 200
