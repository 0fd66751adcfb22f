"""``svc add``: appended tables, comments kept byte for byte, conflicts refused."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from supervisord_lite.cli.editing import add_service, plan_addition
from supervisord_lite.core.manifest import load_manifest
from supervisord_lite.core.problems import ManifestError

FILE = Path("/srv/svc.toml")

TEXT = """\
# Our platform.   (comments, odd spacing and key order must survive)
[tiers.web]
order = 1
ports = ["3000-3004", "3010-3019"]   # two ranges

[tiers.db]
order = 0
ports = ["5432"]

[services.first]
tier = "web"
port = 3000   # taken
command = "serve"

[services.legacy]
tier = "web"
port = 3001
status = "deprecated"   # still reserves 3001
"""


def add(text: str = TEXT, **kwargs: object) -> str:
    params: dict[str, object] = {"tier": "web", "command": "serve"} | kwargs
    addition = plan_addition(text, FILE, str(params.pop("name", "new")), busy=params.pop("busy", ()), **params)  # type: ignore[arg-type]
    return addition.appended


def test_appends_a_table_and_keeps_the_text_before_it() -> None:
    appended = add(
        port=3002,
        command="serve --port {port}",
        depends_on=["first"],
        description="New one",
        url="http://localhost:{port}",
    )
    assert appended == (
        '\n[services.new]\ntier = "web"\nport = 3002\ncommand = "serve --port {port}"\n'
        'description = "New one"\nurl = "http://localhost:{port}"\ndepends_on = [\n    "first",\n]\n'
    )


def test_auto_port_skips_reserved_deprecated_and_busy_ports() -> None:
    addition = plan_addition(TEXT, FILE, "new", tier="web", command="serve", port="auto", busy={3002, 3003})
    assert addition.port == 3004
    assert addition.manifest.services["new"].port == 3004
    full = plan_addition(TEXT, FILE, "new", tier="web", command="serve", port="auto", busy={3002, 3003, 3004})
    assert full.port == 3010  # the next range


@pytest.mark.parametrize(
    ("kwargs", "where", "message"),
    [
        ({"name": "first"}, "services.first", 'a service named "first" already exists'),
        ({"port": 3000}, "services.new.port", "port 3000 is already taken by first"),
        ({"port": 3001}, "services.new.port", "port 3001 is already taken by legacy (a deprecated"),
        ({"port": 8080}, "services.new.port", "port 8080 is outside the ranges of tier web"),
        ({"tier": "wbe"}, "services.new.tier", 'unknown tier "wbe"; did you mean "web"?'),
        ({"tier": "wbe", "port": "auto"}, "services.new.tier", 'unknown tier "wbe" (tiers: db, web)'),
        ({"depends_on": ["legacy"]}, "services.new.depends_on", "depends on legacy, which is deprecated"),
        ({"depends_on": ["nope"]}, "services.new.depends_on", 'depends on "nope", but no service has that name'),
        ({"command": ""}, "services.new.command", "the command is empty"),
        ({"command": "serve {prot}"}, "services.new.command", 'unknown placeholder "{prot}"'),
        ({"name": "bad name"}, 'services."bad name"', "is not a valid service name"),
        ({"tier": "db", "port": "auto", "busy": {5432}}, "services.new.port", 'no free port left in tier "db" (5432)'),
    ],
)
def test_refuses_what_would_not_pass_check(kwargs: dict[str, object], where: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        add(**kwargs)
    assert [p.where for p in caught.value.errors] == [where]
    assert message in caught.value.errors[0].message


def test_a_name_an_override_brings_is_refused_naming_that_file() -> None:
    from supervisord_lite.core.sources import Source

    local = Source("/srv/svc.local.toml", '[services.mine]\ntier = "web"\nport = 3002\ncommand = "x"\n')
    ci = Source("ci.toml", '[services.mine]\nport = 3003\n\n[services.ci]\ntier = "web"\nport = 3004\ncommand = "y"\n')
    # the file that introduced the table brings it; ci.toml only moves mine's port
    for name, file in (("mine", "/srv/svc.local.toml"), ("ci", "ci.toml")):
        with pytest.raises(ManifestError) as caught:
            plan_addition(TEXT, FILE, name, tier="web", command="serve", overlays=[local, ci])
        assert [p.where for p in caught.value.errors] == [f"services.{name}"]
        assert caught.value.errors[0].message == f'a service named "{name}" already exists (defined in {file})'
    with pytest.raises(ManifestError) as only_local:
        plan_addition(TEXT, FILE, "mine", tier="web", command="serve", overlays=[local])
    assert only_local.value.errors[0].message.endswith("(defined in /srv/svc.local.toml)")


def test_refuses_when_the_manifest_is_already_invalid() -> None:
    with pytest.raises(ManifestError, match="port 3000 is already taken by first"):
        add(TEXT + '[services.dup]\ntier = "web"\nport = 3000\ncommand = "x"\n', port=3002)


def test_auto_needs_a_tier_with_ranges() -> None:
    with pytest.raises(ManifestError, match='tier "default" reserves no port range; give --port N'):
        add('[services.a]\ncommand = "x"\n', tier=None, port="auto")


@pytest.mark.parametrize(
    ("ending", "separator"),
    [("x = 1", "\n\n"), ("x = 1\n", "\n"), ("x = 1\n\n", ""), ("", "")],
)
def test_separator_keeps_one_blank_line(ending: str, separator: str) -> None:
    text = '[services.a]\ncommand = "x"\n' + ending.replace("x = 1", "port = 3000") if ending else ""
    appended = add(text, tier=None)
    assert appended.startswith(separator + "[services.new]")


def test_crlf_files_get_crlf() -> None:
    text = TEXT.replace("\n", "\r\n")
    appended = add(text, port=3002)
    assert appended.startswith("\r\n[services.new]\r\n") and "\n" not in appended.replace("\r\n", "")


def test_add_service_writes_the_file_keeping_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "svc.toml"
    path.write_bytes(TEXT.encode())
    path.chmod(0o640)
    addition = add_service(path, "new", tier="web", command="serve --port {port}", port="auto")
    data = path.read_bytes()
    assert data.startswith(TEXT.encode()) and data == TEXT.encode() + addition.appended.encode()
    assert path.stat().st_mode & 0o777 == 0o640
    assert load_manifest(path).services["new"].command == ("serve", "--port", str(addition.port))
    assert [p.name for p in tmp_path.iterdir()] == ["svc.toml"]  # no temporary file left


def test_add_service_refuses_an_explicit_port_someone_listens_on(tmp_path: Path) -> None:
    path = tmp_path / "svc.toml"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    text = f'[services.a]\ncommand = "x"\nport = {port + 1 if port < 65535 else port - 1}\n'
    path.write_text(text)
    try:
        with pytest.raises(ManifestError, match=rf"port {port} is in use by pid \d+ .*; stop it first"):
            add_service(path, "new", tier=None, command="serve", port=port)
    finally:
        listener.close()
    assert path.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["svc.toml"]


def test_add_service_on_a_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such manifest file"):
        add_service(tmp_path / "svc.toml", "new", tier=None, command="serve")
    assert not (tmp_path / "svc.toml").exists()


def test_a_refused_addition_points_at_no_line_past_the_end_of_the_file() -> None:
    with pytest.raises(ManifestError) as refused:
        add(name="other", port=3000)
    [problem] = refused.value.problems
    assert problem.where == "services.other.port" and "already taken by first" in problem.message
    assert problem.line is None and str(problem).startswith(f"{FILE}: error: services.other.port: ")
