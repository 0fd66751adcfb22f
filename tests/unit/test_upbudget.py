"""The default bound of `svc up`: derived from the manifest, linear in its size."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisord_lite.core.model import Backoff, Manifest, ServiceSpec, SupervisorSpec, Tier
from supervisord_lite.core.upbudget import SPAWN_MARGIN, SPAWN_PER_SERVICE, longest_chain, settle_budget, start_budget


def spec(name: str, tier: str = "a", deps: tuple[str, ...] = (), **fields: object) -> ServiceSpec:
    return ServiceSpec(name=name, tier=tier, command=("x",), depends_on=deps, **fields)  # type: ignore[arg-type]


def manifest(*services: ServiceSpec, tiers: dict[str, int] | None = None) -> Manifest:
    tiers = tiers or {"a": 0}
    return Manifest(Path("/m.toml"), SupervisorSpec(), {n: Tier(n, o) for n, o in tiers.items()}, {s.name: s for s in services})


def test_start_budget_is_every_attempt_the_start_limit_allows_and_the_backoff_between() -> None:
    s = spec("x", ready_timeout=10.0, start_limit=3, backoff=Backoff(first=1, max=3))
    assert start_budget(s) == pytest.approx(4 * 10 + (1 + 2 + 3))


def test_chains_follow_dependencies_and_tiers() -> None:
    m = manifest(
        spec("db", "infra", ready_timeout=5.0),
        spec("cache", "infra", ready_timeout=1.0),
        spec("migrate", "infra", ("db",), ready_timeout=2.0),
        spec("api", "app", ("cache",), ready_timeout=3.0),
        spec("web", "app", ready_timeout=1.0),
        tiers={"infra": 0, "app": 1},
    )
    weight = lambda s: s.ready_timeout  # noqa: E731
    assert longest_chain(m, m.services, weight) == pytest.approx(5 + 2 + 3)  # db, migrate, then the app tier: api
    assert longest_chain(m, ["cache", "api"], weight) == pytest.approx(1 + 3)  # only what this up starts
    assert longest_chain(m, [], weight) == 0


def test_settle_budget_adds_stopping_and_a_spawn_margin() -> None:
    m = manifest(spec("a", ready_timeout=1.0, start_limit=0, stop_timeout=2.0), spec("b", deps=("a",), ready_timeout=1.0, start_limit=0, stop_timeout=3.0))
    assert settle_budget(m, ["a", "b"]) == pytest.approx(2 + 5 + SPAWN_MARGIN + 2 * SPAWN_PER_SERVICE)


def test_a_thousand_services_in_a_long_chain_are_fine() -> None:
    services = [spec(f"s{i}", deps=(f"s{i - 1}",) if i else (), ready_timeout=1.0, start_limit=0) for i in range(1000)]
    m = manifest(*services)
    assert longest_chain(m, m.services, lambda s: s.ready_timeout) == pytest.approx(1000)
