"""${VAR} interpolation (compose's semantics), {services.NAME.port} references, [env],
env_file lists, the project .env, and overrides merged with each value's origin."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisord_lite.core.interpolate import interpolate, manifest_variables
from supervisord_lite.core.manifest import analyse, check_manifest, load_manifest, merged_sources, parse_manifest
from supervisord_lite.core.overrides import local_name, merge_documents
from supervisord_lite.core.problems import ManifestError
from supervisord_lite.core.sources import Source

ENV = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${SET}", "value"),
        ("a-${SET}-b", "a-value-b"),
        ("${EMPTY}", ""),
        ("${SET:-d}", "value"),
        ("${EMPTY:-d}", "d"),
        ("${UNSET:-d}", "d"),
        ("${SET-d}", "value"),
        ("${EMPTY-d}", ""),  # without ":" only an unset variable takes the default
        ("${UNSET-d}", "d"),
        ("${SET:?m}", "value"),
        ("${EMPTY?m}", ""),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${UNSET:-a b:c}", "a b:c"),
        ("$$", "$"),
        ("$${SET}", "${SET}"),
        ("$SET $HOME $(x) `y` 100$", "$SET $HOME $(x) `y` 100$"),  # only ${...} and $$ are read
    ],
)
def test_interpolation_follows_compose(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == (expected, [])


def test_an_unset_variable_is_empty_and_named() -> None:
    assert interpolate("x${UNSET}y", ENV) == ("xy", ["UNSET"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${UNSET:?give it}", "UNSET is not set: give it"),
        ("${EMPTY:?give it}", "EMPTY is empty: give it"),
        ("${UNSET?}", "UNSET is not set"),
        ("${1BAD}", "is not ${VAR}"),
        ("${}", "is not ${VAR}"),
        ("${SET", 'without its closing "}"'),
    ],
)
def test_interpolation_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        interpolate(text, ENV)
    assert message in str(caught.value)


def test_the_environment_wins_over_the_dotenv() -> None:
    assert manifest_variables({"A": "env"}, "A=file\nB=file\n", ".env") == {"A": "env", "B": "file"}


def test_values_are_interpolated_in_command_env_cwd_env_file_and_readiness(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    text = """
[services.api]
port = 8000
command = "serve --db ${DB:-none} --port {port} $$HOME"
cwd = "${WORK}"
env_file = ["${WORK}/a.env", "b.env"]
env = { URL = "http://${HOST}:{port}/", LITERAL = "$${NOT}" }
ready = { http = "/${HEALTH}", exec = "check ${HOST}" }
"""
    manifest, problems = analyse(text, tmp_path / "svc.toml", environ={"WORK": "work", "HOST": "h", "HEALTH": "up"})
    assert manifest is not None, problems
    api = manifest.services["api"]
    assert api.command == ("serve", "--db", "none", "--port", "8000", "$HOME")
    assert api.cwd == tmp_path / "work"
    assert api.env_files == (tmp_path / "work" / "a.env", tmp_path / "b.env")
    assert dict(api.env) == {"URL": "http://h:8000/", "LITERAL": "${NOT}"}
    assert api.ready.http == "/up" and api.ready.exec == ("check", "h")


def test_a_substituted_value_is_never_read_again(tmp_path: Path) -> None:
    text = '[services.a]\ncommand = "echo ${V}"\n'
    manifest, problems = analyse(text, tmp_path / "svc.toml", environ={"V": "{port} ${X} $$"})
    assert manifest is not None, problems
    assert manifest.services["a"].command == ("echo", "{port} ${X} $$")  # and still one argument


def test_a_required_variable_is_an_error_with_file_line_and_key(tmp_path: Path) -> None:
    text = '[services.a]\ncommand = "x"\nenv = { PASSWORD = "${PASSWORD:?set PASSWORD in .env}" }\n'
    manifest, problems = analyse(text, tmp_path / "svc.toml", environ={})
    assert manifest is None
    [problem] = problems
    assert str(problem) == (
        f"{tmp_path / 'svc.toml'}:3:9: error: services.a.env.PASSWORD: PASSWORD is not set: set PASSWORD in .env"
    )


def test_an_unset_variable_is_a_warning(tmp_path: Path) -> None:
    manifest, problems = analyse('[services.a]\ncommand = "x ${NOPE}"\n', tmp_path / "svc.toml", environ={})
    assert manifest is not None and manifest.services["a"].command == ("x", "")
    assert [p.severity for p in problems] == ["warning"] and "NOPE is not set" in problems[0].message


def test_the_project_dotenv_is_read_unless_turned_off(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# the project's values\nUSER_NAME=alice\nSHARED=file\n")
    text = '[services.a]\ncommand = "x ${USER_NAME:-nobody} ${SHARED}"\n'
    manifest, _ = analyse(text, tmp_path / "svc.toml", environ={"SHARED": "env"})
    assert manifest is not None and manifest.services["a"].command == ("x", "alice", "env")
    manifest, _ = analyse("[supervisor]\ndotenv = false\n" + text, tmp_path / "svc.toml", environ={"SHARED": "env"})
    assert manifest is not None and manifest.services["a"].command == ("x", "nobody", "env")


def test_a_malformed_dotenv_names_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("A=1\nnot a line\n")
    manifest, problems = analyse('[services.a]\ncommand = "x"\n', tmp_path / "svc.toml", environ={})
    assert manifest is None
    assert str(problems[0]).startswith(f"{tmp_path / '.env'}:2: error: expected KEY=VALUE")


def test_references_to_another_services_port(tmp_path: Path) -> None:
    text = """
[env]
DATABASE_URL = "postgres://127.0.0.1:{services.db.port}/app"

[services.db]
port = 25432
command = "postgres -p {port}"

[services.api]
command = "api --db-port {services.db.port}"
env = { OWN = "{services.api.port}" }
port = 8000
"""
    manifest, problems = analyse(text, tmp_path / "svc.toml", environ={})
    assert manifest is not None, problems
    api = manifest.services["api"]
    assert api.command == ("api", "--db-port", "25432")
    assert dict(api.env) == {"DATABASE_URL": "postgres://127.0.0.1:25432/app", "OWN": "8000"}
    assert manifest.services["db"].env["DATABASE_URL"] == "postgres://127.0.0.1:25432/app"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("{services.dbb.port}", 'no service named "dbb"; did you mean "db"?'),
        ("{services.zz.port}", 'no service named "zz" (services: db, api)'),
        ("{services.db.prot}", 'unknown key "prot"; did you mean "port"?'),
        ("{services.api.port}", "the service api has no port"),
    ],
)
def test_a_bad_reference_is_an_error_with_file_and_line(tmp_path: Path, reference: str, message: str) -> None:
    text = f'[services.db]\nport = 5432\ncommand = "x"\n\n[services.api]\ncommand = "run {reference}"\n'
    manifest, problems = analyse(text, tmp_path / "svc.toml", environ={})
    assert manifest is None
    [problem] = problems
    assert (problem.file, problem.line, problem.service, problem.key) == (str(tmp_path / "svc.toml"), 6, "api", "command")
    assert message in problem.message


def test_the_manifest_env_comes_under_the_services_own(tmp_path: Path) -> None:
    text = '[env]\nA = "shared"\nB = "shared"\n[services.s]\ncommand = "x"\nenv = { B = "own" }\n'
    manifest, _ = analyse(text, tmp_path / "svc.toml", environ={})
    assert manifest is not None and dict(manifest.services["s"].env) == {"A": "shared", "B": "own"}


def test_env_file_takes_a_string_or_an_array(tmp_path: Path) -> None:
    one = parse_manifest('[services.s]\ncommand = "x"\nenv_file = "a.env"\n', tmp_path / "svc.toml")
    assert one.services["s"].env_files == (tmp_path / "a.env",)
    many = parse_manifest('[services.s]\ncommand = "x"\nenv_file = ["a.env", "b.env", ""]\n', tmp_path / "svc.toml")
    assert many.services["s"].env_files == (tmp_path / "a.env", tmp_path / "b.env")
    with pytest.raises(ManifestError, match="expected a path or an array of paths, got"):
        parse_manifest('[services.s]\ncommand = "x"\nenv_file = ["a.env", 3]\n', tmp_path / "svc.toml")


def test_tables_merge_key_by_key_and_lists_replace() -> None:
    main = {"services": {"a": {"port": 1, "command": ["x", "y"], "env": {"A": "1", "B": "1"}}}, "tiers": {"t": {"order": 0}}}
    local = {"services": {"a": {"command": ["z"], "env": {"B": "2"}}, "b": {"command": "w"}}}
    merged, origins = merge_documents([("svc.toml", main), ("svc.local.toml", local)])
    assert merged == {
        "services": {
            "a": {"port": 1, "command": ["z"], "env": {"A": "1", "B": "2"}},
            "b": {"command": "w"},
        },
        "tiers": {"t": {"order": 0}},
    }
    assert main["services"]["a"]["env"] == {"A": "1", "B": "1"}  # the documents are left as they were
    assert origins.file_of(("services", "a", "port")) == "svc.toml"
    assert origins.file_of(("services", "a", "command")) == "svc.local.toml"
    assert origins.file_of(("services", "a", "env", "A")) == "svc.toml"
    assert origins.file_of(("services", "a", "env", "B")) == "svc.local.toml"
    assert origins.file_of(("services", "b", "command")) == "svc.local.toml"
    assert origins.file_of(("services", "b", "missing")) == "svc.local.toml"


def test_the_local_file_name() -> None:
    assert local_name("svc.toml") == "svc.local.toml"
    assert local_name("platform.toml") == "platform.local.toml"


def test_svc_local_toml_and_overlays_merge_in_order(tmp_path: Path) -> None:
    path = tmp_path / "svc.toml"
    path.write_text('[services.a]\nport = 8000\ncommand = "run {port}"\n')
    (tmp_path / "svc.local.toml").write_text("[services.a]\nport = 8001\n")
    extra = tmp_path / "ci.toml"
    extra.write_text('[services.a]\ncommand = "ci {port}"\n')
    assert load_manifest(path).services["a"].command == ("run", "8001")
    loaded = load_manifest(path, [extra])
    assert loaded.services["a"].command == ("ci", "8001")
    assert loaded.overlays == (extra,)
    merged = merged_sources(path, [extra])
    assert merged.where(("services", "a", "port")) == (str(tmp_path / "svc.local.toml"), 2)
    assert merged.where(("services", "a", "command")) == (str(extra), 2)


def test_every_problem_names_the_file_its_value_came_from(tmp_path: Path) -> None:
    path = tmp_path / "svc.toml"
    path.write_text('[services.a]\nport = 8000\ncommand = "run"\n\n[services.b]\ncommand = "x"\n')
    (tmp_path / "svc.local.toml").write_text('# mine\n[services.a]\nrestart = "sometimes"\n')
    extra = tmp_path / "ci.toml"
    extra.write_text('[services.b]\n\nenv_file = "missing.env"\nport = 99999\n')
    manifest, problems = check_manifest(path, overlays=[extra])
    assert manifest is None
    where = {(p.file, p.line, p.where) for p in problems}
    assert (str(tmp_path / "svc.local.toml"), 3, "services.a.restart") in where
    assert (str(extra), 4, "services.b.port") in where
    extra.write_text('[services.b]\n\nenv_file = "missing.env"\n')
    (tmp_path / "svc.local.toml").write_text('# mine\n[services.a]\nrestart = "always"\n')
    manifest, problems = check_manifest(path, overlays=[extra])
    assert manifest is not None
    [warning] = [p for p in problems if p.key == "env_file"]
    assert (warning.file, warning.line) == (str(extra), 3)


def test_a_syntax_error_in_an_override_names_that_file(tmp_path: Path) -> None:
    path = tmp_path / "svc.toml"
    path.write_text('[services.a]\ncommand = "run"\n')
    (tmp_path / "svc.local.toml").write_text("[services.a\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert str(caught.value).startswith(f"{tmp_path / 'svc.local.toml'}:1:")


def test_sources_are_merged_in_the_order_given(tmp_path: Path) -> None:
    manifest, _ = analyse(
        '[services.a]\ncommand = "one"\n',
        tmp_path / "svc.toml",
        [Source("b.toml", '[services.a]\ncommand = "two"\n'), Source("c.toml", '[services.a]\ncommand = "three"\n')],
        environ={},
    )
    assert manifest is not None and manifest.services["a"].command == ("three",)


def test_the_resolved_manifest_reads_back_as_itself(tmp_path: Path) -> None:
    import tomli_w

    from supervisord_lite.core.serialise import manifest_to_dict

    text = '[env]\nA = "${V}"\n[services.a]\ncommand = "run ${V} $$HOME"\ncwd = "${V}"\nenv_file = ["x.env", "${V}.env"]\n'
    (tmp_path / "$x {port}").mkdir()
    manifest, problems = analyse(text, tmp_path / "svc.toml", environ={"V": "$x {port}"})
    assert manifest is not None, problems
    again, problems = analyse(tomli_w.dumps(manifest_to_dict(manifest)), tmp_path / "svc.toml", environ={})
    assert again == manifest, problems
