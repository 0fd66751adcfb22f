"""Selector words (service, tier, @group, service:/tier:) and `svc run`'s variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisord_lite.core.manifest import parse_manifest
from supervisord_lite.core.problems import ManifestError
from supervisord_lite.core.runenv import run_environment, variable_stem
from supervisord_lite.core.selectors import AmbiguousSelector, UnknownSelector, group_names, resolve

FILE = Path("/srv/svc.toml")
TEXT = """\
[tiers.infra]
order = 0
[tiers.app]
order = 1
[tiers.web]
order = 2

[services.db]
tier = "infra"
port = 5432
command = "db"
groups = ["data", "backend"]

[services.cache]
tier = "infra"
port = 6379
command = "cache"
groups = ["data"]
status = "disabled"

[services.api]
tier = "app"
port = 8000
url = "http://localhost:{port}/"
command = "api"
groups = ["backend"]

[services.web]
tier = "web"
port = 3000
command = "web"

[services.docs]
tier = "web"
port = 3001
command = "docs"

[services.payments-api]
tier = "app"
port = 8001
command = "p"
"""

M = parse_manifest(TEXT, FILE)


def test_names_tiers_and_groups_select_in_manifest_order() -> None:
    assert resolve(M, ["api"]) == ["api"]
    assert resolve(M, ["infra"]) == ["db", "cache"]
    assert resolve(M, ["@backend"]) == ["db", "api"]
    assert resolve(M, ["api", "@data", "db"]) == ["db", "cache", "api"]  # each once, file order
    assert resolve(M, []) == []
    assert group_names(M) == ["data", "backend"]


def test_startable_sets_leave_out_inactive_members_but_keep_a_named_one() -> None:
    assert resolve(M, ["@data"], startable=True) == ["db"]
    assert resolve(M, ["infra"], startable=True) == ["db"]
    assert resolve(M, ["cache"], startable=True) == ["cache"]  # the caller's own refusal explains it


def test_a_word_that_is_a_service_and_a_tier_is_refused_with_both_spellings() -> None:
    with pytest.raises(AmbiguousSelector) as refused:
        resolve(M, ["web"])
    assert str(refused.value) == (
        '"web" is both a service and a tier in /srv/svc.toml: write "service:web" for the service or "tier:web" for the tier'
    )
    assert resolve(M, ["service:web"]) == ["web"]
    assert resolve(M, ["tier:web"]) == ["web", "docs"]
    assert resolve(M, ["tier:infra"]) == ["db", "cache"]


def test_a_tier_that_holds_only_the_service_of_its_name_is_not_ambiguous() -> None:
    alone = parse_manifest(TEXT.replace('[services.docs]\ntier = "web"', '[services.docs]\ntier = "app"'), FILE)
    assert resolve(alone, ["web"]) == ["web"]
    assert resolve(alone, ["web"], startable=True) == ["web"]


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("apii", 'no service named "apii" in /srv/svc.toml (nor a tier); did you mean "api"?'),
        ("zzz", 'no service named "zzz" in /srv/svc.toml (nor a tier)'),
        ("backend", 'no service named "backend" in /srv/svc.toml (nor a tier); "backend" is a group: write "@backend"'),
        ("@bakend", 'no group named "bakend" in /srv/svc.toml; did you mean "@backend"?'),
        ("@api", 'no group named "api" in /srv/svc.toml ("api" is a service: write it without "@")'),
        ("@zzz", 'no group named "zzz" in /srv/svc.toml (groups: data, backend)'),
        ("service:infra", 'no service named "infra" in /srv/svc.toml'),
        ("tier:ap", 'no tier named "ap" in /srv/svc.toml; did you mean "app"?'),
    ],
)
def test_unknown_words_are_refused_with_a_hint(word: str, message: str) -> None:
    with pytest.raises(UnknownSelector) as refused:
        resolve(M, [word])
    assert str(refused.value) == message


def test_a_set_that_selects_nothing_is_an_error_not_everything() -> None:
    empty = parse_manifest('[tiers.a]\norder = 0\n[tiers.b]\norder = 1\n[services.x]\ntier = "a"\ncommand = "x"\n', FILE)
    with pytest.raises(UnknownSelector, match='tier "b" of /srv/svc.toml has no service'):
        resolve(empty, ["b"])
    only_disabled = parse_manifest(TEXT.replace('groups = ["data", "backend"]', 'groups = ["backend"]'), FILE)
    assert resolve(only_disabled, ["@data"]) == ["cache"]
    with pytest.raises(UnknownSelector, match='group "data" of /srv/svc.toml has no active service'):
        resolve(only_disabled, ["@data"], startable=True)


def test_group_names_are_checked_by_the_loader() -> None:
    with pytest.raises(ManifestError, match='services.x.groups: "@bad" is not a valid group name'):
        parse_manifest('[services.x]\ncommand = "x"\ngroups = ["ok", "@bad"]\n', FILE)
    with pytest.raises(ManifestError, match="services.x.groups: expected an array of strings"):
        parse_manifest('[services.x]\ncommand = "x"\ngroups = "ok"\n', FILE)
    assert parse_manifest('[services.x]\ncommand = "x"\ngroups = ["a", "a", "b"]\n', FILE).services["x"].groups == ("a", "b")


def test_run_environment_names_ports_and_urls() -> None:
    env = run_environment(M, ["db", "api", "payments-api"])
    assert env.variables == {
        "SVC_MANIFEST": "/srv/svc.toml",
        "SVC_DB_PORT": "5432",
        "SVC_API_PORT": "8000",
        "SVC_API_URL": "http://localhost:8000/",
        "SVC_PAYMENTS_API_PORT": "8001",
    }
    assert env.clashes == []
    assert variable_stem("a.b-c_d") == "SVC_A_B_C_D"


def test_run_environment_reports_names_that_map_to_the_same_variables() -> None:
    m = parse_manifest(
        '[services.api-v1]\nport = 8001\ncommand = "x"\n[services."api.v1"]\nport = 8002\ncommand = "x"\n', FILE
    )
    env = run_environment(m, ["api-v1", "api.v1"])
    assert env.variables["SVC_API_V1_PORT"] == "8001"
    assert env.clashes == [("api-v1", "api.v1")]
