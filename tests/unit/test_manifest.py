"""The loader: defaults, placeholders, every validation rule and its message, round trips."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import textwrap
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisord_lite.host.portinfo import port_warnings
from supervisord_lite.core.manifest import analyse, check_manifest, load_manifest, parse_manifest
from supervisord_lite.core.model import Kind, RestartPolicy, Status
from supervisord_lite.core.problems import ManifestError, Problem
from supervisord_lite.core.serialise import manifest_to_dict
from supervisord_lite.core.services import SERVICE_KEYS
from tests.conftest import ROOT

FILE = Path("/srv/app/svc.toml")

BASE = """\
[tiers.infra]
order = 0
ports = ["5000-5999"]

[tiers.web]
order = 1
ports = ["3000-3099"]

[services.db]
tier = "infra"
port = 5432
command = "postgres -p {port}"
"""


def errors_of(text: str) -> list[Problem]:
    manifest, problems = analyse(text, FILE)
    errors = [p for p in problems if p.is_error]
    assert (manifest is None) == bool(errors)
    return errors


# --------------------------------------------------------------------------- one case per rule

# (id, text appended to BASE, where the problem is, a regex its message must match,
#  its line within the appended text)
BAD = [
    ("toml-syntax", "[services.api\n", "", r"^invalid TOML: .*", 1),
    ("unknown-service-key", '[services.api]\ntier = "web"\ncommand = "x"\nprot = 3001\n', "services.api.prot",
     r'^unknown key "prot"; did you mean "port"\?$', 4),
    ("unknown-top-key", '[servises.api]\ncommand = "x"\n', "servises",
     r'^unknown key "servises"; did you mean "services"\?$', 1),
    ("unknown-supervisor-key", '[supervisor]\nstate_dri = "x"\n', "supervisor.state_dri",
     r'did you mean "state_dir"\?', 2),
    ("unknown-tier-key", '[tiers.extra]\norder = 2\nport = ["7000-7999"]\n', "tiers.extra.port",
     r'did you mean "ports"\?', 3),
    ("unknown-ready-key", '[services.api]\ntier = "web"\nport = 3001\ncommand = "x"\nready = { htp = "/" }\n',
     "services.api.ready.htp", r'did you mean "http"\?', 5),
    ("unknown-backoff-key", '[services.api]\ntier = "web"\ncommand = "x"\nbackoff = { frist = "1s" }\n',
     "services.api.backoff.frist", r'did you mean "first"\?', 4),
    ("string-for-number", '[services.api]\ntier = "web"\nport = "3001"\ncommand = "x"\n', "services.api.port",
     r'^expected an integer from 1 to 65535, got the string "3001"$', 3),
    ("bool-for-number", '[services.api]\ntier = "web"\nport = true\ncommand = "x"\n', "services.api.port",
     r"got the boolean true$", 3),
    ("port-zero", '[services.api]\ntier = "web"\nport = 0\ncommand = "x"\n', "services.api.port",
     r"^port 0 is outside 1-65535$", 3),
    ("port-70000", '[services.api]\ntier = "web"\nport = 70000\ncommand = "x"\n', "services.api.port",
     r"^port 70000 is outside 1-65535$", 3),
    ("duplicate-port", '[services.api]\ntier = "infra"\nport = 5432\ncommand = "x"\n', "services.api.port",
     r"^port 5432 is already taken by db$", 3),
    ("duplicate-port-deprecated",
     '[services.old]\ntier = "web"\nport = 3001\nstatus = "deprecated"\n'
     '[services.new]\ntier = "web"\nport = 3001\ncommand = "x"\n', "services.new.port",
     r"^port 3001 is already taken by old \(a deprecated service keeps its port reserved\)$", 7),
    ("port-outside-tier", '[services.api]\ntier = "web"\nport = 8080\ncommand = "x"\n', "services.api.port",
     r"^port 8080 is outside the ranges of tier web \(3000-3099\)$", 3),
    ("unknown-dependency", '[services.api]\ntier = "web"\ncommand = "x"\ndepends_on = ["dbb"]\n',
     "services.api.depends_on", r'^depends on "dbb", but no service has that name; did you mean "db"\?$', 4),
    ("cycle",
     '[services.a]\ntier = "web"\ncommand = "x"\ndepends_on = ["b"]\n'
     '[services.b]\ntier = "web"\ncommand = "x"\ndepends_on = ["c"]\n'
     '[services.c]\ntier = "web"\ncommand = "x"\ndepends_on = ["a"]\n',
     "services.a.depends_on", r"^dependency cycle: a -> b -> c -> a$", 4),
    ("self-cycle", '[services.a]\ntier = "web"\ncommand = "x"\ndepends_on = ["a"]\n', "services.a.depends_on",
     r"^dependency cycle: a -> a$", 4),
    ("tier-inversion", '[services.api]\ntier = "web"\ncommand = "x"\n'
     '[services.cache]\ntier = "infra"\ncommand = "x"\ndepends_on = ["api"]\n', "services.cache.depends_on",
     r"^cache \(tier infra, order 0\) depends on api of the later tier web \(order 1\)", 7),
    ("depends-on-deprecated", '[services.old]\ntier = "infra"\nstatus = "deprecated"\nreplaced_by = "db"\n'
     '[services.api]\ntier = "web"\ncommand = "x"\ndepends_on = ["old"]\n', "services.api.depends_on",
     r'^depends on old, which is deprecated and never starts; depend on "db" instead$', 8),
    ("depends-on-disabled", '[services.off]\ntier = "infra"\ncommand = "x"\nstatus = "disabled"\n'
     '[services.api]\ntier = "web"\ncommand = "x"\ndepends_on = ["off"]\n', "services.api.depends_on",
     r"^depends on off, which is disabled", 8),
    ("unknown-tier", '[services.api]\ntier = "wbe"\ncommand = "x"\n', "services.api.tier",
     r'^unknown tier "wbe"; did you mean "web"\? \(tiers: infra, web\)$', 2),
    ("missing-tier", '[services.api]\ncommand = "x"\n', "services.api", r'^missing key "tier" \(one of: infra, web\)$',
     1),
    ("replaced-by-nothing", '[services.old]\ntier = "web"\nstatus = "deprecated"\nreplaced_by = "neww"\n',
     "services.old.replaced_by", r'^"neww" names no service$', 4),
    ("empty-command", '[services.api]\ntier = "web"\ncommand = ""\n', "services.api.command",
     r"^the command is empty$", 3),
    ("empty-command-array", '[services.api]\ntier = "web"\ncommand = []\n', "services.api.command",
     r"^the command is empty$", 3),
    ("missing-command", '[services.api]\ntier = "web"\n', "services.api", r'^missing key "command"', 1),
    ("unsplittable-command", '[services.api]\ntier = "web"\ncommand = "echo \'oops"\n', "services.api.command",
     r"^cannot split .* like a shell: No closing quotation$", 3),
    ("bad-name", '[services."my api"]\ntier = "web"\ncommand = "x"\n', 'services."my api"',
     r"is not a valid service name", 1),
    ("unknown-placeholder", '[services.api]\ntier = "web"\nport = 3001\ncommand = "serve --port {prot}"\n',
     "services.api.command", r'^unknown placeholder "\{prot\}" in "\{prot\}"; did you mean "port"\?', 4),
    ("port-placeholder-without-port", '[services.api]\ntier = "web"\ncommand = "serve {port}"\n',
     "services.api.command", r'"\{port\}" is used in "\{port\}" but the service has no port', 3),
    ("unmatched-brace", '[services.api]\ntier = "web"\ncommand = ["awk", "{print}x}"]\n', "services.api.command",
     r'^unknown placeholder "\{print\}"', 3),
    ("http-without-port", '[services.api]\ntier = "web"\ncommand = "x"\nready = { http = "/health" }\n',
     "services.api.ready.http", r"^an http probe needs a port, and the service has none$", 4),
    ("http-not-a-path", '[services.api]\ntier = "web"\nport = 3001\ncommand = "x"\nready = { http = "health" }\n',
     "services.api.ready.http", r'^expected a path starting with "/"', 5),
    ("tcp-false-with-port", '[services.api]\ntier = "web"\nport = 3001\ncommand = "x"\nready = { tcp = false }\n',
     "services.api.ready.tcp", r"ready only once its port accepts connections", 5),
    ("bad-log-regex", '[services.api]\ntier = "web"\ncommand = "x"\nready = { log = "([a-z" }\n',
     "services.api.ready.log", r"^invalid regular expression", 4),
    ("health-with-log", '[services.api]\ntier = "web"\nport = 3001\ncommand = "x"\nhealth = { log = "ok" }\n',
     "services.api.health.log", r"^log only makes sense for ready", 5),
    ("bad-duration", '[services.api]\ntier = "web"\ncommand = "x"\nready_timeout = "2 sec"\n',
     "services.api.ready_timeout", r'^\'2 sec\' is not a duration such as "500ms"', 4),
    ("zero-timeout", '[services.api]\ntier = "web"\ncommand = "x"\nready_timeout = 0\n',
     "services.api.ready_timeout", r"^ready_timeout must be more than 0$", 4),
    ("bad-size", '[services.api]\ntier = "web"\ncommand = "x"\nmax_memory = "lots"\n', "services.api.max_memory",
     r"is not a size", 4),
    ("bad-enum", '[services.api]\ntier = "web"\ncommand = "x"\nrestart = "allways"\n', "services.api.restart",
     r'^expected one of always, on-failure, no, got the string "allways"; did you mean "always"\?$', 4),
    ("bad-signal", '[services.api]\ntier = "web"\ncommand = "x"\nstop_signal = "TREM"\n',
     "services.api.stop_signal", r'"TREM" is not a signal name; did you mean "SIGTERM"\?', 4),
    ("watch-escapes", '[services.api]\ntier = "web"\ncommand = "x"\nwatch = ["../other/**/*.py"]\n',
     "services.api.watch", r'^"../other/\*\*/\*.py" points outside the manifest folder /srv/app$', 4),
    ("backoff-inverted", '[services.api]\ntier = "web"\ncommand = "x"\nbackoff = { first = "1m", max = "10s" }\n',
     "services.api.backoff.first", r"longer than max", 4),
    ("bad-env-value", '[services.api]\ntier = "web"\ncommand = "x"\nenv = { A = { b = 1 } }\n',
     "services.api.env.A", r"^expected a string or a number, got a table$", 4),
    ("bad-metrics", '[supervisor]\nmetrics = "localhost"\n', "supervisor.metrics", r"is not HOST:PORT", 2),
    ("bad-restore", '[supervisor]\nrestore = "yes"\n', "supervisor.restore", r"^expected true or false", 2),
    ("bad-tier-range", '[tiers.extra]\norder = 2\nports = ["7999-7000"]\n', "tiers.extra.ports",
     r'^port range "7999-7000" must go upwards within 1-65535$', 3),
    ("tier-without-order", '[tiers.extra]\nports = ["7000-7999"]\n', "tiers.extra", r'^missing key "order"', 1),
    ("service-not-a-table", '[services]\napi = "uvicorn"\n', "services.api", r"^expected a table of service", 2),
    ("name-too-long", f'[services.{"a" * 64}]\ntier = "web"\ncommand = "x"\n', f"services.{'a' * 64}",
     r'is not a valid service name: 64 characters, at most 63$', 1),
    ("nul-in-command", '[services.api]\ntier = "web"\ncommand = ["x", "a\\u0000"]\n', "services.api.command",
     r'^the argument "a\\x00" contains a NUL byte, which a process cannot be given$', 3),
    ("nul-in-env-value", '[services.api]\ntier = "web"\ncommand = "x"\nenv = { A = "\\u0000" }\n', "services.api.env.A",
     r"^the value contains a NUL byte", 4),
    ("env-key-not-a-name", '[services.api]\ntier = "web"\ncommand = "x"\nenv = { "A=B" = "1" }\n',
     "services.api.env.A=B", r'^"A=B" is not an environment variable name', 4),
    ("duration-too-long", '[services.api]\ntier = "web"\ncommand = "x"\nstop_timeout = "721h"\n',
     "services.api.stop_timeout", r"is too long: durations go from 0 to 720h \(30 days\)$", 4),
    ("size-too-large", '[services.api]\ntier = "web"\ncommand = "x"\nmax_memory = "2TiB"\n', "services.api.max_memory",
     r"is too large: sizes go from 1 byte to 1TiB$", 4),
    ("too-many-log-backups", "[supervisor]\nlog_backups = 101\n", "supervisor.log_backups",
     r"^log_backups 101 is outside 0-100$", 2),
    ("integer-beyond-64-bits", "[tiers.extra]\norder = 9223372036854775808\n", "tiers.extra.order",
     r"^an integer beyond 64 bits", 2),
]  # fmt: skip


@pytest.mark.parametrize(("text", "where", "message", "line"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_each_bad_input_is_one_clear_error(text: str, where: str, message: str, line: int | None) -> None:
    errors = errors_of(BASE + text)
    assert len(errors) == 1, "\n".join(map(str, errors))
    line = line + BASE.count("\n") if line is not None else None
    problem = errors[0]
    assert problem.where == where
    assert re.search(message, problem.message), problem.message
    assert problem.line == line
    place = f"{FILE}:{line}:" if line is not None else f"{FILE}: "
    assert str(problem).startswith(place), str(problem)
    assert str(problem).endswith(f"error: {where + ': ' if where else ''}{problem.message}")


def test_problem_names_file_service_and_key() -> None:
    (problem,) = errors_of(BASE + '[services.api]\ntier = "web"\nport = 70000\ncommand = "x"\n')
    assert (problem.file, problem.service, problem.key) == (str(FILE), "api", "port")
    assert str(problem) == f"{FILE}:15:1: error: services.api.port: port 70000 is outside 1-65535"


def test_syntax_error_has_line_and_column() -> None:
    (problem,) = errors_of('[supervisor]\nname = "x"\nmetrics = [1,\n')
    assert problem.message.startswith("invalid TOML:")
    assert problem.line == 4 or (problem.line, problem.col) == (3, 14)


def test_every_problem_is_reported_in_one_pass() -> None:
    text = BASE + textwrap.dedent(
        """\
        [services.api]
        tier = "web"
        port = 70000
        command = ""
        depends_on = ["nope"]
        restart = "sometimes"
        timeout = "5s"

        [services.web]
        tier = "web"
        port = 5432
        command = "serve"
        """
    )
    wheres = [p.where for p in errors_of(text)]
    assert wheres == [
        "services.api.port",
        "services.api.command",
        "services.api.depends_on",
        "services.api.restart",
        "services.api.timeout",
        "services.web.port",
        "services.web.port",
    ]


def test_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "nope.toml")
    assert str(caught.value) == f"{tmp_path / 'nope.toml'}: error: no such manifest file " + (
        "(give one with -f PATH, $SVC_MANIFEST, or create ./svc.toml)"
    )


def test_non_utf8_file_is_a_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "svc.toml"
    path.write_bytes(b"[services.a]\ncommand = '\xff'\n")
    with pytest.raises(ManifestError, match="is not UTF-8"):
        load_manifest(path)


# --------------------------------------------------------------------------- what loads


def test_defaults_are_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "dev.toml"
    path.write_text(
        textwrap.dedent(
            """\
            [services.web]
            port = 3000
            command = "python -m http.server {port} --bind '127.0.0.1'"

            [services.worker]
            command = ["celery", "-A", "app", "worker", "--name", "{name}@{state_dir}"]

            [services.migrate]
            kind = "oneshot"
            command = "alembic upgrade head"
            """
        )
    )
    m = load_manifest(path)
    assert m.path == path
    assert m.supervisor.name == "dev"
    assert m.supervisor.state_dir == tmp_path / ".svc"
    assert m.supervisor.restore is True  # a starting daemon brings back what was wanted
    assert list(m.tiers) == ["default"] and m.tiers["default"].ports == ()
    assert list(m.services) == ["web", "worker", "migrate"]
    web, worker, migrate = m.services.values()
    assert web.command == ("python", "-m", "http.server", "3000", "--bind", "127.0.0.1")
    assert web.ready.tcp and not web.ready.http
    assert web.cwd == tmp_path and web.tier == "default" and web.status is Status.ACTIVE
    assert web.restart is RestartPolicy.ON_FAILURE and web.stop_signal is signal.SIGTERM
    assert worker.command[-1] == f"worker@{tmp_path / '.svc'}"
    assert worker.ready.is_empty and worker.port is None
    assert migrate.kind is Kind.ONESHOT and migrate.restart is RestartPolicy.NO


def test_values_are_converted(tmp_path: Path) -> None:
    m = parse_manifest(
        BASE
        + textwrap.dedent(
            """\
            [services.api]
            tier = "web"
            port = 3001
            command = "serve"
            url = "http://localhost:{port}/{{literal}}"
            ready = { http = "/health", exec = "curl -sf localhost:{port}", timeout = "500ms" }
            health = { http = "/live" }
            env = { PORT_COPY = "{port}", WORKERS = 4, RATIO = 0.5, DEBUG = true }
            env_file = "env/api.env"
            cwd = "../api"
            stop_signal = "INT"
            stop_timeout = "1m30s"
            max_memory = "1GiB"
            backoff = { first = "100ms", max = "5s" }
            failed_retry = "0"
            watch = ["src/**/*.py", "/srv/app/templates/*.html"]
            """
        ),
        FILE,
    )
    api = m.services["api"]
    assert api.url == "http://localhost:3001/{literal}"
    assert api.ready.tcp and api.ready.http == "/health" and api.ready.timeout == 0.5
    assert api.ready.exec == ("curl", "-sf", "localhost:3001")
    assert api.health is not None and api.health.http == "/live" and api.health.tcp
    assert dict(api.env) == {"PORT_COPY": "3001", "WORKERS": "4", "RATIO": "0.5", "DEBUG": "true"}
    assert api.env_file == Path("/srv/app/env/api.env") and api.cwd == Path("/srv/api")
    assert api.stop_signal is signal.SIGINT and api.stop_timeout == 90
    assert api.max_memory == 1024**3
    assert (api.backoff.first, api.backoff.max, api.backoff.reset_after) == (0.1, 5, 30)
    assert api.failed_retry == 0
    assert api.watch == ("src/**/*.py", "templates/*.html")
    assert api.probe_interval == m.supervisor.probe_interval


def test_tiers_are_sorted_by_order() -> None:
    m = parse_manifest(
        '[tiers.front]\norder = 2\n[tiers.back]\norder = 1\n[services.a]\ntier = "front"\ncommand = "x"\n', FILE
    )
    assert list(m.tiers) == ["back", "front"]


def test_warnings_do_not_stop_loading() -> None:
    m, problems = analyse(BASE + '[services.api]\ntier = "web"\ncommand = "x"\nreplaced_by = "db"\n', FILE)
    assert m is not None
    assert [(p.severity, p.where) for p in problems] == [("warning", "services.api.replaced_by")]


# --------------------------------------------------------------------------- check_manifest warnings


def test_check_warns_about_a_foreign_listener_naming_pid_and_command(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    path = tmp_path / "svc.toml"
    path.write_text(f'[services.api]\nport = {port}\ncommand = "serve"\nenv_file = "missing.env"\n')
    try:
        m, problems = check_manifest(path, live_checks=port_warnings)
        assert m is not None
        by_key = {p.key: p for p in problems}
        assert set(by_key) == {"port", "env_file"} and all(p.severity == "warning" for p in problems)
        assert f"port {port} is already in use by pid {os.getpid()}" in by_key["port"].message
        assert "pytest" in by_key["port"].message or sys.executable in by_key["port"].message
        assert str(tmp_path / "missing.env") in by_key["env_file"].message

        _, mine = check_manifest(path, live_checks=lambda m: port_warnings(m, {os.getpid()}))
        assert [p.key for p in mine] == ["env_file"]
        _, unprobed = check_manifest(path)
        assert [p.key for p in unprobed] == ["env_file"]
    finally:
        listener.close()


def test_check_warnings_name_the_file_as_given_with_the_line_of_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    (tmp_path / "svc.toml").write_text(
        f'[supervisor]\nmetrics = ""\n\n[services.api]\ncommand = "serve"\nport = {port}\nenv_file = "missing.env"\n'
    )
    monkeypatch.chdir(tmp_path)
    try:
        _, problems = check_manifest(Path("svc.toml"), live_checks=port_warnings)
    finally:
        listener.close()
    lines = sorted(str(p).split(": warning: ")[0] for p in problems)
    assert lines == ["svc.toml:6:1", "svc.toml:7:1"]  # not /abs/path/svc.toml without a line


def test_no_replacement_is_suggested_that_names_no_active_service() -> None:
    def message(replaced_by: str, extra: str = "") -> str:
        text = BASE + (
            f'[services.old]\ntier = "infra"\nstatus = "deprecated"\nreplaced_by = "{replaced_by}"\n{extra}'
            '[services.api]\ntier = "web"\ncommand = "x"\ndepends_on = ["old"]\n'
        )
        return next(p.message for p in errors_of(text) if p.where == "services.api.depends_on")

    assert message("nothing") == "depends on old, which is deprecated and never starts"
    off = '[services.off]\ntier = "infra"\ncommand = "x"\nstatus = "disabled"\n'
    assert message("off", off) == "depends on old, which is deprecated and never starts"
    assert message("db").endswith('; depend on "db" instead')


def test_check_returns_errors_without_a_manifest(tmp_path: Path) -> None:
    path = tmp_path / "svc.toml"
    path.write_text('[services.api]\ncommand = ""\n')
    m, problems = check_manifest(path)
    assert m is None and [p.where for p in problems] == ["services.api.command"]


# --------------------------------------------------------------------------- round trips


def assert_round_trip(text: str, path: Path = FILE) -> None:
    m = parse_manifest(text, path)
    again = parse_manifest(tomli_w.dumps(manifest_to_dict(m)), path)
    assert again == m
    assert list(again.services) == list(m.services)


def test_bizosaas_round_trips() -> None:
    path = ROOT / "config" / "bizosaas.toml"
    assert_round_trip(path.read_text(), path)


def test_round_trip_keeps_literal_braces_and_odd_values() -> None:
    assert_round_trip(
        BASE
        + '[services.api]\ntier = "web"\nport = 3001\ncommand = ["awk", "{{print $1}}"]\n'
        + 'ready = { after = 0.3333, log = "^up {{2}}$" }\nhealth = { exec = "true", tcp = false }\n'
        + 'backoff = { first = 0.123456789 }\nuser = "nobody"\nmax_memory = 12345\n'
    )


_DURATIONS = st.one_of(
    st.sampled_from(["500ms", "2s", "1m", "1h", "0", "1m30s"]),
    st.integers(0, 10**6),
    st.floats(0, 10**6, allow_nan=False),
)
_NO_NUL = st.text(st.characters(blacklist_characters="\x00"), min_size=1)  # a process cannot be given a NUL
_SERVICE_VALUES = st.fixed_dictionaries(
    {"command": st.one_of(_NO_NUL, st.lists(_NO_NUL, min_size=1))},
    optional={
        "port": st.integers(1, 65535),
        "title": st.text(),
        "description": st.text(),
        "url": st.text(),
        "status": st.sampled_from(["active", "disabled", "deprecated"]),
        "kind": st.sampled_from(["service", "oneshot"]),
        "restart": st.sampled_from(["always", "on-failure", "no"]),
        "ready_timeout": _DURATIONS,
        "stop_timeout": _DURATIONS,
        "failed_retry": _DURATIONS,
        "start_limit": st.integers(0, 100),
        "unhealthy_threshold": st.integers(1, 100),
        "env": st.dictionaries(
            st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
            st.one_of(st.text(st.characters(blacklist_characters="\x00")), st.integers(), st.booleans()),
        ),
        "stop_signal": st.sampled_from(["TERM", "SIGINT", 9, "hup"]),
        "max_memory": st.one_of(st.integers(1, 2**40), st.sampled_from(["512MB", "1GiB", "100KB"])),
        "ready": st.fixed_dictionaries(
            {}, optional={"exec": _NO_NUL, "after": _DURATIONS, "log": st.sampled_from(["ok", "^a+$"])}
        ),
        "watch": st.lists(st.from_regex(r"[a-z]{1,5}(/\*\*)?/\*\.[a-z]{1,3}", fullmatch=True)),
        "user": st.from_regex(r"[a-z_][a-z0-9_-]{0,15}|[0-9]{1,9}", fullmatch=True),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True), _SERVICE_VALUES, max_size=4))
def test_any_valid_manifest_round_trips(services: dict[str, dict[str, object]]) -> None:
    text = tomli_w.dumps({"supervisor": {"probe_interval": "3s"}, "services": services})
    try:
        m = parse_manifest(text, FILE)
    except ManifestError:
        return  # generated values may clash (ports, placeholders); validity is tested elsewhere
    again = parse_manifest(tomli_w.dumps(manifest_to_dict(m)), FILE)
    assert again == m


# --------------------------------------------------------------------------- the loader never crashes

_KEYS = st.sampled_from([*SERVICE_KEYS, "order", "ports", "first", "http", "exec", "log", "tcp", "x", "services"])
_SCALARS = st.one_of(
    st.text(max_size=20),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.sampled_from(["{port}", "{x}", "{", "5000-5999", "1s", "-1", "SIGTERM", "(", "a b 'c", "/h"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS | st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "supervisor": st.dictionaries(_KEYS | st.sampled_from(["name", "metrics", "state_dir"]), _VALUES, max_size=4),
        "tiers": st.dictionaries(st.text(max_size=6), _VALUES, max_size=3),
        "services": st.dictionaries(
            st.text(max_size=6), st.dictionaries(_KEYS, _VALUES, max_size=6) | _VALUES, max_size=4
        ),
        "extra": _VALUES,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCUMENTS)
def test_loader_raises_only_manifest_error_on_arbitrary_documents(document: dict[str, object]) -> None:
    try:
        text = tomli_w.dumps(document)
    except (TypeError, ValueError):
        return  # not representable in TOML
    try:
        parse_manifest(text, FILE)
    except ManifestError as exc:
        assert exc.problems and all(str(p).startswith(str(FILE)) for p in exc.problems)


_LINES = st.lists(
    st.one_of(
        st.sampled_from(["[services.a]", "[tiers.t]", "[supervisor]", "[services.a.ready]", "[[services]]", "["]),
        st.builds(lambda k, v: f"{k} = {v}", _KEYS, st.sampled_from(['"x"', "1", "[", "{ a = 1 }", '"""', "true"])),
        st.text(max_size=30),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), _LINES.map("\n".join)))
def test_loader_raises_only_manifest_error_on_arbitrary_text(text: str) -> None:
    try:
        parse_manifest(text, FILE)
    except ManifestError as exc:
        assert exc.problems


def test_a_service_on_the_metrics_port_is_an_error() -> None:
    text = (
        '[supervisor]\nmetrics = "127.0.0.1:9108"\n'
        '[services.api]\ncommand = "x"\nport = 9108\n'
        '[services.web]\ncommand = "y"\nport = 9109\n'
    )
    problems = analyse(text, Path("/srv/app/svc.toml"))[1]
    errors = [str(p) for p in problems if p.is_error]
    assert len(errors) == 1
    assert "services.api.port: port 9108 is the supervisor's own metrics port" in errors[0]
