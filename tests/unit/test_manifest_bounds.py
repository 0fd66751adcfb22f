"""The loader's bounds: every limit refused with a message naming file, key and limit,
the text scan that guards tomllib, the shell splitter, and the costly checks' budgets."""

from __future__ import annotations

import re
import shlex
import time
import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisord_lite.core import limits
from supervisord_lite.core.durations import parse_duration, parse_size
from supervisord_lite.core.manifest import analyse, load_manifest, parse_manifest
from supervisord_lite.core.problems import ManifestError, Problem
from supervisord_lite.core.shellwords import split_like_shell
from supervisord_lite.core.toml_bounds import check_toml_bounds
from tests.conftest import ROOT

FILE = Path("/srv/app/svc.toml")
MiB = 1 << 20


def problems_of(text: str) -> list[Problem]:
    manifest, problems = analyse(text, FILE)
    assert manifest is None, "expected the manifest to be refused"
    return problems


def only_error(text: str) -> Problem:
    errors = [p for p in problems_of(text) if p.is_error]
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


def service(body: str, name: str = "api") -> str:
    return f'[services.{name}]\ncommand = "serve"\n{body}'


# --------------------------------------------------------------------------- what the issue named


def test_a_100000_deep_array_is_refused_at_its_place(tmp_path: Path) -> None:
    path = tmp_path / "svc.toml"
    path.write_text('[services.api]\ncommand = "x"\nenv = { A = ' + "[" * 100_000 + "]" * 100_000 + " }\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    (problem,) = caught.value.problems
    assert str(problem) == (
        f"{path}:3:22: error: arrays and inline tables are nested more than {limits.MAX_NESTING} deep, the limit"
    )


def test_a_ready_timeout_of_400_digits_names_the_key() -> None:
    number = only_error(service(f"ready_timeout = {'9' * 400}\n"))
    assert (number.where, number.line) == ("services.api.ready_timeout", 3)
    assert number.message == "an integer beyond 64 bits (TOML integers go from -2^63 to 2^63-1)"
    text = only_error(service(f'ready_timeout = "{"9" * 400}s"\n'))
    assert text.where == "services.api.ready_timeout"
    assert text.message.endswith("is too long: durations go from 0 to 720h (30 days)")


def test_a_log_max_bytes_of_400_digits_gib_names_the_range() -> None:
    problem = only_error(f'[supervisor]\nlog_max_bytes = "{"9" * 400}GiB"\n' + service(""))
    assert problem.where == "supervisor.log_max_bytes"
    assert problem.message.endswith("is too large: sizes go from 1 byte to 1TiB")


def test_log_backups_is_bounded() -> None:
    problem = only_error("[supervisor]\nlog_backups = 100000000\n" + service(""))
    assert (problem.where, problem.message) == ("supervisor.log_backups", "log_backups 100000000 is outside 0-100")
    assert parse_manifest("[supervisor]\nlog_backups = 100\n" + service(""), FILE).supervisor.log_backups == 100


def test_a_20000_part_dotted_header_is_refused_at_once() -> None:
    text = "[" + ".".join(["a"] * 20_000) + "]\nx = 1\n"
    assert len(text) > 40_000
    start = time.perf_counter()
    problem = only_error(text)
    elapsed = time.perf_counter() - start
    assert (problem.line, problem.col) == (1, 2)
    assert problem.message == f"a dotted key or table name has more than {limits.MAX_KEY_PARTS} parts, the limit"
    assert elapsed < 1.0  # 10.9 s and 1.5 GB before; ~1 ms now


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ('command = "serve\\u0000 --now"\n', "services.api.command",
         r'^the argument "serve\\x00" contains a NUL byte, which a process cannot be given$'),
        ('env = { A = "b\\u0000c" }\n', "services.api.env.A", r"^the value contains a NUL byte"),
        ('env = { "A=B" = "c" }\n', "services.api.env.A=B",
         r'^"A=B" is not an environment variable name: use letters, digits and "_", not starting with a digit$'),
        ('env = { "1A" = "c" }\n', "services.api.env.1A", r"is not an environment variable name"),
        ('ready = { exec = ["check", "a\\u0000"] }\n', "services.api.ready.exec", r"contains a NUL byte"),
        ('cwd = "srv\\u0000"\n', "services.api.cwd", r'^the path "srv\\x00" contains a NUL byte$'),
        ('env_file = "a\\u0000.env"\n', "services.api.env_file", r"contains a NUL byte$"),
        ('user = "www\\u0000data"\n', "services.api.user", r"is not a user name or uid"),
        ('watch = ["src/\\u0000"]\n', "services.api.watch", r"contains a NUL byte$"),
    ],
)  # fmt: skip
def test_values_a_process_cannot_be_given_are_refused(body: str, where: str, message: str) -> None:
    text = service(body).replace('command = "serve"\n', "", 1) if body.startswith("command") else service(body)
    problem = only_error(text)
    assert problem.where == where
    assert re.search(message, problem.message), problem.message


def test_a_300_character_service_name_is_refused() -> None:
    name = "a" * 300
    problem = only_error(service("", name))
    assert problem.service == name and problem.key is None
    assert problem.message.endswith("is not a valid service name: 300 characters, at most 63")
    assert len(str(problem)) < 300  # the name is cut short where it is shown


@pytest.mark.parametrize("name", ["a" * 63, "A1", "_x", "web.v2", "api-1", "Api_1", "1.0"])
def test_service_names_up_to_63_file_name_safe_characters_load(name: str) -> None:
    assert list(parse_manifest(service("", f'"{name}"'), FILE).services) == [name]


@pytest.mark.parametrize("name", ["a" * 64, "-x", ".x", "a b", "a/b", "..", "é"])
def test_other_service_names_are_refused(name: str) -> None:
    assert "is not a valid service name" in only_error(service("", f'"{name}"')).message


def test_the_manifests_in_config_still_load() -> None:
    for path in sorted((ROOT / "config").glob("*.toml")):
        load_manifest(path)


# --------------------------------------------------------------------------- the text scan


@pytest.mark.parametrize(
    ("text", "message", "line", "col"),
    [
        ("x = " + "[" * 11 + "]" * 11 + "\n", "nested more than 10 deep", 1, 15),
        ("x = [{a = [{b = [{c = [{d = [{e = [{f = 1}]}]}]}]}]}]\n", "nested more than 10 deep", 1, 35),
        ("[" + ".".join("abcdefghijk") + "]\n", "more than 10 parts", 1, 2),
        ("\n  [[" + ".".join("abcdefghijk") + "]]\n", "more than 10 parts", 2, 5),
        ('"a".b.c.d.e.f.g.h.i.j."k" = 1\n', "more than 10 parts", 1, 1),
        ("x = { " + ".".join("abcdefghijk") + " = 1 }\n", "more than 10 parts", 1, 7),
        ("".join(f"k{i} = 1\n" for i in range(limits.MAX_KEYS + 1)), "more than 60,000 keys", limits.MAX_KEYS + 1, 1),
        ("".join(f"[t{i}]\n" for i in range(limits.MAX_KEYS + 1)), "more than 60,000 keys", limits.MAX_KEYS + 1, 1),
        ("x = [" + "[]," * (limits.MAX_CONTAINERS + 1) + "]\n", "more than 20,000 arrays", 1, 60_003),
        ("x = [" + "1," * (limits.MAX_COMMAS + 1) + "]\n", "more than 50,000 values", 1, 100_007),
    ],
)
def test_the_text_scan_refuses_before_tomllib_reads(text: str, message: str, line: int, col: int) -> None:
    problem = only_error(text)
    assert message in problem.message and problem.message.endswith("the limit")
    assert (problem.line, problem.col) == (line, col)


def test_what_is_within_every_bound_loads() -> None:
    text = (
        "[" + ".".join("abcdefghij") + "]\n"
        + ".".join("abcdefghij") + " = " + "[" * 10 + "]" * 10 + "\n"
    )  # fmt: skip
    assert check_toml_bounds(text) is None
    tomllib.loads(text)


# Valid TOML whose strings, comments and keys look like brackets, dotted keys and headers.
TRICKY = "\n".join(
    [
        "lit = ''''one quote''''",
        'two = """""two quotes"""""',
        'mismatch = """aaa\'\'\'bbb"""',
        'escaped = """lol\\""""""',
        'five = """',
        '[ not a header ]',
        '"""""',
        'multi = """\\',
        '   a.b.c.d.e.f.g.h.i.j.k.l \\',
        '   """',
        'basic = "a [ { # \\" = ] }"',
        '\'key [ with = brackets\' = "# not a comment"',
        '"a.b.c.d.e.f.g.h.i.j.k.l" = \'x.y.z.a.b.c.d.e.f.g.h.i.j\'',
        'arr = [ # [[[[',
        '  1, 2, # ]]]]',
        '  [3, 4],',
        '[5],',
        '  { a = [5], "b.c" = { d = 6 } },',
        ']',
        '  [ table . "with spaces" ]',
        '  x = 1.5',
        '[[ aot ]]',
        'y = 1979-05-27T07:32:00.999999-07:00',
        't = 07:32:00.5',
        'f = +1.5e-10',
        "",
    ]
)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_the_scan_follows_valid_toml_to_its_end(newline: str) -> None:
    """Tricky valid TOML passes, and a bound broken after it is still found: the scan
    did not lose its place in strings, comments or headers."""
    text = TRICKY.replace("\n", newline)
    tomllib.loads(text)
    assert check_toml_bounds(text) is None
    deep = text + "zz = " + "[" * 11 + "]" * 11 + newline
    overflow = check_toml_bounds(deep)
    assert overflow is not None and "nested" in overflow.message
    assert overflow.position(deep)[0] == deep.count("\n")
    long_key = text + ".".join(["zz"] * 11) + " = 1" + newline
    overflow = check_toml_bounds(long_key)
    assert overflow is not None and "parts" in overflow.message


_TRICKY_TEXT = st.lists(
    st.sampled_from(["a", "b", " ", "\t", "\n", '"', "'", "#", "[", "]", "{", "}", "=", ".", ",", "\\", "é",
                     "'''", '"""', "a.b", "[x]"]),
    max_size=8,
).map("".join)  # fmt: skip
_SCALARS = st.one_of(_TRICKY_TEXT, st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.booleans())
_DOCUMENTS = st.dictionaries(
    _TRICKY_TEXT,
    st.recursive(
        _SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY_TEXT, inner, max_size=3),
        max_leaves=12,
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCUMENTS, st.booleans())
def test_the_scan_follows_any_document_tomli_w_writes(document: dict[str, object], multiline: bool) -> None:
    text = tomli_w.dumps(document, multiline_strings=multiline)
    assert check_toml_bounds(text) is None  # these documents are far within every bound
    deep = text + "\nzzz = " + "[" * 11 + "]" * 11 + "\n"
    overflow = check_toml_bounds(deep)
    assert overflow is not None and "nested" in overflow.message


# --------------------------------------------------------------------------- bounds on the data


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("x = " + str(2**63) + "\n", "x", "an integer beyond 64 bits"),
        ("x = 0x" + "f" * 5000 + "\n", "x", "an integer beyond 64 bits"),
        ("x = [" + "1," * 1001 + "]\n", "x", "an array of 1,001 items: an array holds at most 1,000"),
        ("[x]\n" + "".join(f"k{i} = 1\n" for i in range(1001)), "x", "1,001 keys: a table holds at most 1,000"),
        ("".join(f'[services.s{i}]\ncommand = "x"\n' for i in range(1001)), "services",
         "1,001 services: a manifest holds at most 1,000"),
        ('x = "' + "a" * (limits.MAX_STRING + 1) + '"\n', "x", "a string of 131,073 characters: at most 131,072"),
        ('"' + "k" * (limits.MAX_STRING + 1) + '" = 1\n', "", "a key of 131,073 characters"),
    ],
)  # fmt: skip
def test_values_beyond_the_data_bounds_are_refused(text: str, where: str, message: str) -> None:
    problem = only_error(text)
    assert problem.where == where
    assert problem.message.startswith(message), problem.message


def test_a_decimal_integer_too_long_for_python_is_refused_at_its_line() -> None:
    problem = only_error('[supervisor]\nname = "x"\nlog_backups = ' + "9" * 5000 + "\n")
    assert (problem.line, problem.message) == (3, "invalid TOML: an integer beyond 64 bits")


def test_a_file_over_1_mib_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "svc.toml"
    path.write_bytes(b"# " + b"x" * MiB + b"\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert str(caught.value) == f"{path}: error: is larger than 1,024 KiB, the limit for a manifest"
    assert "larger than 1,024 KiB" in only_error("# " + "é" * (MiB // 2) + "\n").message  # bytes, not characters
    with pytest.raises(ManifestError, match="larger than 1,024 KiB"):
        load_manifest(Path("/dev/zero"))  # endless: only 1 MiB and a byte are read


# --------------------------------------------------------------------------- ranges of values


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ('ready_timeout = "721h"\n', "services.api.ready_timeout",
         r"^'721h' is too long: durations go from 0 to 720h \(30 days\)$"),
        ("stop_timeout = 1e308\n", "services.api.stop_timeout", r"is too long: durations go from 0 to 720h"),
        ("stop_timeout = inf\n", "services.api.stop_timeout", r"is too long"),
        ("failed_retry = nan\n", "services.api.failed_retry", r"it must be 0 or more"),
        ('probe_interval = "5ms"\n', "services.api.probe_interval", r"^probe_interval '5ms' is shorter than 10ms"),
        ('max_memory = "2TiB"\n', "services.api.max_memory", r"^'2TiB' is too large: sizes go from 1 byte to 1TiB$"),
        ("start_limit = 10001\n", "services.api.start_limit", r"^start_limit 10001 is outside 0-10000$"),
        ("unhealthy_threshold = 10001\n", "services.api.unhealthy_threshold", r"is outside 1-10000$"),
        ('user = "a:b"\n', "services.api.user", r"is not a user name or uid"),
        ('user = "4294967295"\n', "services.api.user", r"^uid 4294967295 is beyond 4294967294"),
        ('port = 3001\nready = { http = "/health check" }\n', "services.api.ready.http",
         r"has blanks or control characters"),
        ("ready = { log = '" + "a" * 1025 + "' }\n", "services.api.ready.log",
         r"^a regular expression of 1,025 characters: at most 1,024$"),
        ('cwd = "' + "d/" * 2100 + '"\n', "services.api.cwd", r"bytes long once resolved; at most 4,095$"),
        ('cwd = "' + "d" * 256 + '"\n', "services.api.cwd", r"has a name of more than 255 bytes$"),
        ('command = "' + "a " * 1001 + '"\n', "services.api.command", r"^a command of 1,001 arguments: at most 1,000$"),
        ('command = ["' + "a" * (128 * 1024) + '"]\n', "services.api.command",
         r"^an argument of 131,072 bytes: the kernel takes at most 128 KiB$"),
        ('env = { A = "' + "é" * 70_000 + '" }\n', "services.api.env.A", r"longer than 128 KiB"),
        ('export = { image = "x", env = { "a.b" = "c" } }\n', "services.api.export.env.a.b",
         r"is not an environment variable name"),
        ('export = { build = "ctx\\u0000" }\n', "services.api.export.build", r"contains a NUL byte$"),
    ],
)  # fmt: skip
def test_values_outside_their_range_name_the_range(body: str, where: str, message: str) -> None:
    text = service(body).replace('command = "serve"\n', "", 1) if body.startswith("command") else service(body)
    problem = only_error(text)
    assert problem.where == where
    assert re.search(message, problem.message), problem.message


def test_the_edges_of_each_range_load() -> None:
    m = parse_manifest(
        "[supervisor]\nprobe_interval = \"10ms\"\nlog_max_bytes = \"1TiB\"\nlog_backups = 0\n"
        + service('ready_timeout = "720h"\nstart_limit = 10000\nunhealthy_threshold = 10000\nuser = "4294967294"\n'
                  'max_memory = 1\nenv = { _A1 = "x" }\nready = { log = "' + "a" * 1024 + '" }\n'),
        FILE,
    )  # fmt: skip
    api = m.services["api"]
    assert (m.supervisor.probe_interval, m.supervisor.log_max_bytes, api.ready_timeout) == (0.01, 1 << 40, 2_592_000)
    assert (api.start_limit, api.unhealthy_threshold, api.user, api.max_memory) == (10000, 10000, "4294967294", 1)


def test_durations_and_sizes_never_raise_anything_but_value_error() -> None:
    for value in [10**400, -(10**400), 1e308, float("inf"), float("nan"), "9" * 5000 + "s", "9" * 5000 + ".5h"]:
        with pytest.raises(ValueError):
            parse_duration(value)
    for value in [10**400, "9" * 5000 + "GiB", "9" * 400 + ".9KB", "0.0000001"]:
        with pytest.raises(ValueError):
            parse_size(value)
    assert parse_size("0.57kb") == 570  # exact: not 569 from 0.57 * 1000 in floating point
    assert parse_size("1.5GiB") == 3 << 29


def test_pattern_characters_are_budgeted_across_the_manifest() -> None:
    pattern = "(?:a|b)" * 146  # 1,022 characters
    per_service = len(pattern)
    allowed = limits.MAX_PATTERNS_TOTAL // per_service
    text = "".join(service(f"ready = {{ log = '{pattern}{i:02d}' }}\n", f"s{i}") for i in range(allowed + 2))
    errors = [p for p in problems_of(text) if p.is_error]
    assert [p.service for p in errors] == [f"s{allowed}", f"s{allowed + 1}"]
    assert errors[0].message == "the ready.log patterns of this manifest are longer than 65,536 characters in all"


# --------------------------------------------------------------------------- many problems stay cheap


def test_past_200_problems_the_rest_are_counted() -> None:
    bad_keys = "".join(f"bad{j} = 1\n" for j in range(10))
    text = "".join(f'[services.s{i}]\ncommand = "x"\n{bad_keys}' for i in range(600))
    problems = problems_of(text)
    assert len(problems) == limits.MAX_PROBLEMS + 1
    last = problems[-1]
    assert (last.severity, last.service, last.key) == ("error", None, None)
    assert last.message == "5,800 more problems not shown (fix the ones above and check again)"
    assert all(p.line is not None for p in problems[:-1])


def test_did_you_mean_has_a_budget_per_manifest() -> None:
    """1,000 services with long names and 2,000 misspelt dependencies: hints for the
    first ones, then none, and the whole check stays far below a second."""
    names = [f"s{i:04d}" + "x" * 58 for i in range(1000)]
    text = "".join(
        f'[services.{name}]\ncommand = "x"\ndepends_on = ["{name[:-1]}y", "{name[:-2]}zz"]\n' for name in names
    )
    start = time.perf_counter()
    problems = problems_of(text)
    elapsed = time.perf_counter() - start
    hinted = [p for p in problems if "did you mean" in p.message]
    assert hinted and len(hinted) < len(problems) - 1
    assert elapsed < 10  # about 0.1 s of CPU; without the budget, 2,000 comparisons of 1,000 names: minutes


def test_problems_on_one_line_come_out_by_column() -> None:
    problems = problems_of(service('backoff = { max = "x", first = "y", reset_after = "z" }\n'))
    assert [p.key for p in problems] == ["backoff.max", "backoff.first", "backoff.reset_after"]
    assert [p.col for p in problems] == sorted(p.col or 0 for p in problems)


# --------------------------------------------------------------------------- the shell splitter


_SHELL_TEXT = st.lists(st.sampled_from(list("ab '\"\\\t\n\r\x00\x0b") + ["é", "\u00a0"]), max_size=16).map("".join)


@settings(max_examples=3000, deadline=None)
@given(_SHELL_TEXT)
def test_split_like_shell_is_shlex_split(text: str) -> None:
    try:
        expected: object = shlex.split(text)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: object = split_like_shell(text)
    except ValueError as exc:
        got = str(exc)
    assert got == expected


@pytest.mark.parametrize("text", ["a" * 500_000, "'' " * 150_000, "\\a" * 200_000, '"\\x"' * 100_000])
def test_split_like_shell_is_linear(text: str) -> None:
    start = time.perf_counter()
    split_like_shell(text)
    assert time.perf_counter() - start < 5  # ~0.01-0.2 s; shlex.split takes seconds on the first
