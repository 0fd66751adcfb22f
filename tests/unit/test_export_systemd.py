"""The systemd renderer: units, targets, ordering, and the quoting of command lines."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from supervisord_lite.export import ExportError, ExportOptions, Target, render
from supervisord_lite.export.systemd import environment_value, exec_line, quote_arg
from supervisord_lite.core.model import Manifest
from tests.unit.test_export_compose import FILE, manifest

BIN = {"postgres": "/usr/lib/postgresql/16/bin/postgres", "redis-server": "/usr/bin/redis-server"}


def units(m: Manifest) -> dict[str, str]:
    return render(m, Target.SYSTEMD, ExportOptions(resolve_executable=BIN.get))


def settings(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (keys may repeat), comments skipped."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key, []).append(value)
    return out


def test_a_unit_per_active_service_a_target_per_tier_and_one_for_the_platform() -> None:
    files = units(manifest())
    assert list(files) == [
        "svc-db.service", "svc-cache.service", "svc-migrate.service", "svc-worker.service", "svc-api.service",
        "svc-web.service", "svc-infra.target", "svc-backend.target", "svc-web.target", "svc.target",
    ]  # fmt: skip
    platform = settings(files["svc.target"])
    assert platform["Unit"]["Wants"] == ["svc-infra.target svc-backend.target svc-web.target"]
    assert platform["Unit"]["After"] == ["svc-infra.target svc-backend.target svc-web.target"]
    assert platform["Install"]["WantedBy"] == ["multi-user.target"]
    assert "# Left out: old-web (deprecated, replaced by web), lab (disabled)." in files["svc.target"].splitlines()


def test_requires_and_after_from_depends_on_and_the_previous_tier() -> None:
    files = units(manifest())
    api = settings(files["svc-api.service"])["Unit"]
    assert api["Requires"] == ["svc-migrate.service svc-db.service"]
    assert api["After"] == ["svc-migrate.service svc-db.service svc-infra.target"]
    assert api["PartOf"] == ["svc.target"]
    assert "Requires" not in settings(files["svc-db.service"])["Unit"]
    assert "After" not in settings(files["svc-db.service"])["Unit"]
    backend = settings(files["svc-backend.target"])["Unit"]
    assert backend["Wants"] == ["svc-migrate.service svc-worker.service svc-api.service"]
    assert backend["After"] == ["svc-migrate.service svc-worker.service svc-api.service svc-infra.target"]
    assert settings(files["svc-web.service"])["Unit"]["After"] == ["svc-api.service svc-backend.target"]


def test_service_settings() -> None:
    files = units(manifest())
    db = settings(files["svc-db.service"])
    assert db["Service"] == {
        "Type": ["exec"],
        "ExecStart": ["/usr/lib/postgresql/16/bin/postgres -p 5432"],
        "WorkingDirectory": ["/srv/app"],
        "Environment": ['"PORT=5432"', '"SVC_SERVICE=db"'],
        "Restart": ["on-failure"],
        "RestartSec": ["500ms"],
        "KillSignal": ["SIGINT"],
        "TimeoutStopSec": ["30s"],
    }
    assert db["Unit"]["StartLimitBurst"] == ["6"] and db["Unit"]["StartLimitIntervalSec"] == ["60s"]
    api = settings(files["svc-api.service"])["Service"]
    assert api["Restart"] == ["always"]
    assert api["Environment"] == ['"PRICE=$5"', '"MODE=dev"', '"PORT=8000"', '"SVC_SERVICE=api"']  # not export.env


def test_a_oneshot_holds_its_dependents_until_it_exited() -> None:
    service = settings(units(manifest())["svc-migrate.service"])["Service"]
    assert service["Type"] == ["oneshot"] and service["RemainAfterExit"] == ["yes"]
    assert service["TimeoutStartSec"] == ["30s"] and service["Restart"] == ["no"]


def test_a_program_not_found_is_kept_bare_with_a_comment() -> None:
    text = units(manifest())["svc-api.service"]
    assert settings(text)["Service"]["ExecStart"] == ["uvicorn app:app --port 8000"]
    assert "# uvicorn was not found on PATH when exported; systemd looks in /usr/local/sbin" in text


def test_a_relative_program_is_taken_from_the_services_cwd() -> None:
    m = manifest('[services.a]\ncommand = "./bin/run --x"\ncwd = "app"\n')
    assert settings(units(m)["svc-a.service"])["Service"]["ExecStart"] == ["/srv/app/app/bin/run --x"]


def test_names_that_cannot_be_unit_names_are_refused() -> None:
    m = manifest('[supervisor]\nname = "my platform"\n[services.a]\ncommand = "a"\n')
    try:
        units(m)
    except ExportError as exc:
        assert [str(p) for p in exc.problems] == [
            f'{FILE}: error: supervisor.name: "my platform" cannot start a systemd unit name: '
            'use letters, digits, ":", "_", "." and "-"'
        ]
    else:
        raise AssertionError("a platform name with a space was accepted")


# --------------------------------------------------------------------------- quoting

_C_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def unquote_word(word: str) -> str:
    """systemd's reading of one ExecStart= word, per systemd.syntax(7) and systemd.service(5):
    specifiers (%%), variables ($$), double quotes with C escapes, a lone \\; for ";"."""
    word = word.replace("%%", "\0PCT\0")
    assert "%" not in word.replace("\0PCT\0", ""), f"unescaped specifier in {word!r}"
    word = word.replace("\0PCT\0", "%")
    if word == "\\;":
        return ";"
    if not word.startswith('"'):
        assert not re.search(r"[\s\"'\\;$]", word), f"unquoted special character in {word!r}"
        return word
    assert word.endswith('"') and len(word) >= 2
    body, out, i = word[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1]
            if nxt == "x":
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(_C_ESCAPES[nxt])
            i += 2
            continue
        if c == "$":
            assert body[i + 1] == "$", f"unescaped $ in {word!r}"
            out.append("$")
            i += 2
            continue
        assert c != '"', f"unescaped quote in {word!r}"
        out.append(c)
        i += 1
    return "".join(out)


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=30))
def test_quote_arg_reads_back_as_the_same_argument(arg: str) -> None:
    word = quote_arg(arg)
    assert not re.search(r"\s", word.strip('"')) or word.startswith('"')
    assert unquote_word(word) == arg


def test_quoting_examples() -> None:
    assert exec_line(["/bin/echo", "a b", "$HOME", "50%", ";", 'say "hi"', ""]) == (
        '/bin/echo "a b" "$$HOME" "50%%" \\; "say \\"hi\\"" ""'
    )
    assert environment_value("A", "x y%\n") == '"A=x y%%\\n"'


def test_odd_arguments_reach_the_unit_quoted() -> None:
    m = manifest('[services.a]\ncommand = ["/bin/sh", "-c", "echo $HOME; exit 0"]\nenv = { Q = "a \\"b\\"" }\n')
    service = settings(units(m)["svc-a.service"])["Service"]
    assert service["ExecStart"] == ['/bin/sh -c "echo $$HOME; exit 0"']
    assert service["Environment"][0] == '"Q=a \\"b\\""'
