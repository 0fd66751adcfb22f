"""The ``[export]`` and ``[services.NAME.export]`` tables: merging, validation, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from supervisord_lite.core.manifest import analyse, parse_manifest
from supervisord_lite.core.serialise import manifest_to_dict
from supervisord_lite.core.model import ExportSpec

FILE = Path("/srv/app/svc.toml")


def load(text: str) -> dict[str, ExportSpec]:
    return {name: spec.export for name, spec in parse_manifest(text, FILE).services.items()}


def error_lines(text: str) -> list[str]:
    manifest, problems = analyse(text, FILE)
    assert manifest is None
    return [str(p) for p in problems if p.is_error]


def test_no_export_table_means_an_empty_spec() -> None:
    assert load('[services.a]\ncommand = "x"\n') == {"a": ExportSpec()}
    assert ExportSpec().is_empty


def test_top_level_defaults_expand_per_service_and_a_service_table_wins() -> None:
    exports = load(
        """
        [export]
        image = "team/{name}:latest"
        env = { BIND = "0.0.0.0", WHO = "{name}" }

        [services.api]
        command = "api"
        port = 8000

        [services.db]
        command = "postgres"
        port = 5432
        export = { image = "postgres:16", command = "postgres -p {port}", env = { BIND = "::", PGPORT = "{port}" } }

        [services.web]
        command = "web"
        export = { build = "../web" }
        """.replace("\n        ", "\n")
    )
    assert exports["api"].image == "team/api:latest" and exports["api"].build is None
    assert dict(exports["api"].env) == {"BIND": "0.0.0.0", "WHO": "api"}
    assert exports["db"].image == "postgres:16"
    assert exports["db"].command == ("postgres", "-p", "5432")
    assert dict(exports["db"].env) == {"BIND": "::", "WHO": "db", "PGPORT": "5432"}
    # Setting build alone drops the top-level image too: never one service's build under everyone's tag.
    assert exports["web"].image is None
    assert exports["web"].build == Path("/srv/web")


def test_an_empty_command_means_the_images_own() -> None:
    exports = load('[services.db]\ncommand = "postgres"\nexport = { image = "postgres:16", command = [] }\n')
    assert exports["db"].command == ()


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('export = { imag = "x" }', 'services.a.export.imag: unknown key "imag"; did you mean "image"?'),
        ('export = { image = "Team/App" }', 'services.a.export.image: "Team/App" is not an image reference'),
        ('export = { image = "a b" }', 'services.a.export.image: "a b" is not an image reference'),
        ('export = { build = "" }', "services.a.export.build: the build context is empty"),
        ('export = { env = { A = [1] } }', "services.a.export.env.A: expected a string or a number, got an array"),
        ('export = { command = 3 }', "services.a.export.command: expected a string or an array of strings"),
        ('export = { image = "x:{prt}" }', 'services.a.export.image: unknown placeholder "{prt}"'),
        ('export = "x"', "services.a.export: expected a table, got the string"),
    ],
)
def test_service_export_table_errors_name_the_key(table: str, expected: str) -> None:
    lines = error_lines(f'[services.a]\ncommand = "x"\n{table}\n')
    assert any(expected in line for line in lines), lines
    assert all(line.startswith(f"{FILE}:3:") for line in lines), lines


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('[export]\ncommand = "x"\n', 'export.command: unknown key "command"'),
        ('[export]\nimage = "team/{port}"\n', 'export.image: "{port}" in "team/{port}" differs per service'),
        ('[export]\nenv = { P = "{port}" }\n', 'export.env.P: "{port}" in "{port}" differs per service'),
        ('export = 1\n', "export: expected a table"),
    ],
)
def test_top_level_export_errors(table: str, expected: str) -> None:
    lines = error_lines(f'{table}\n[services.a]\ncommand = "x"\nport = 80\n')
    assert any(expected in line for line in lines), lines


def test_an_invalid_top_level_image_is_reported_for_the_service_it_breaks() -> None:
    lines = error_lines('[export]\nimage = "team/{name}"\n[services.Api]\ncommand = "x"\n')
    assert lines == [
        f'{FILE}:3:2: error: services.Api.export.image: "team/Api" (from the top-level [export]) is not an image '
        'reference such as "postgres:16" or "registry.example.com/team/app:1.2" (lowercase, no spaces)'
    ]


def test_svc_config_shows_the_merged_export_and_reads_back_the_same() -> None:
    text = (
        '[export]\nimage = "team/{name}:1"\nenv = { X = "{{literal}}" }\n'
        '[services.a]\ncommand = "x"\n'
        '[services.b]\ncommand = "y"\nexport = { build = "ctx", command = [] }\n'
    )
    m = parse_manifest(text, FILE)
    data = manifest_to_dict(m)
    assert "export" not in data  # merged into each service
    assert data["services"]["a"]["export"] == {"image": "team/a:1", "env": {"X": "{{literal}}"}}
    assert data["services"]["b"]["export"] == {"build": "/srv/app/ctx", "command": [], "env": {"X": "{{literal}}"}}
    assert parse_manifest(tomli_w.dumps(data), FILE) == m
