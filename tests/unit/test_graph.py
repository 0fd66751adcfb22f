"""Start and stop order: closures, steps, tiers, cycles."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisord_lite.core import graph
from supervisord_lite.core.model import Manifest, ServiceSpec, Status, SupervisorSpec, Tier

TIERS = {"infra": 0, "back": 1, "front": 2}


def make(
    services: dict[str, tuple[str, list[str]]],
    statuses: dict[str, Status] | None = None,
    tiers: dict[str, int] = TIERS,
) -> Manifest:
    """services: name -> (tier, depends_on), in file order."""
    statuses = statuses or {}
    return Manifest(
        path=Path("/srv/svc.toml"),
        supervisor=SupervisorSpec(),
        tiers=MappingProxyType({name: Tier(name, order) for name, order in tiers.items()}),
        services=MappingProxyType(
            {
                name: ServiceSpec(
                    name=name,
                    tier=tier,
                    command=("true",),
                    depends_on=tuple(deps),
                    status=statuses.get(name, Status.ACTIVE),
                    replaced_by="api" if statuses.get(name) is Status.DEPRECATED else None,
                )
                for name, (tier, deps) in services.items()
            }
        ),
    )


PLATFORM = make(
    {
        "pg": ("infra", []),
        "redis": ("infra", []),
        "api": ("back", ["pg", "redis"]),
        "crm": ("back", ["pg"]),
        "worker": ("back", ["api"]),
        "web": ("front", ["api"]),
        "admin": ("front", []),
    }
)


def test_chain_starts_one_after_another() -> None:
    m = make({"c": ("back", ["b"]), "b": ("back", ["a"]), "a": ("back", [])})
    assert graph.start_plan(m, ["c"]) == [["a"], ["b"], ["c"]]
    assert graph.stop_plan(m, ["a"]) == [["c"], ["b"], ["a"]]


def test_diamond_runs_the_middle_concurrently() -> None:
    m = make(
        {
            "top": ("back", ["left", "right"]),
            "left": ("back", ["base"]),
            "right": ("back", ["base"]),
            "base": ("back", []),
        }
    )
    assert graph.start_plan(m, ["top"]) == [["base"], ["left", "right"], ["top"]]
    assert graph.stop_plan(m, ["base"]) == [["top"], ["left", "right"], ["base"]]
    assert graph.dependents(m, "base") == {"left", "right", "top"}
    assert graph.dependents(m, "top") == set()


def test_all_active_services_start_tier_by_tier() -> None:
    assert graph.start_plan(PLATFORM, None) == [["pg", "redis"], ["api", "crm"], ["worker"], ["web", "admin"]]


def test_earlier_tiers_in_the_start_set_come_first_even_without_a_dependency() -> None:
    # admin needs nothing, but pg is in the same start set and of an earlier tier
    assert graph.start_plan(PLATFORM, ["admin", "crm"]) == [["pg"], ["crm"], ["admin"]]
    assert graph.prerequisites(PLATFORM, "admin", ["admin", "crm", "pg"]) == {"crm", "pg"}
    assert graph.prerequisites(PLATFORM, "admin", ["admin"]) == set()
    assert graph.prerequisites(PLATFORM, "web", ["web"]) == {"api"}


def test_start_set_is_the_closure_over_depends_on() -> None:
    assert graph.start_set(PLATFORM, ["web"]) == ["pg", "redis", "api", "web"]
    assert graph.start_set(PLATFORM, []) == []
    assert graph.start_set(PLATFORM, None) == list(PLATFORM.services)


def test_start_set_refuses_unknown_and_inactive_names() -> None:
    m = make(
        {"api": ("back", []), "old": ("back", []), "off": ("back", [])},
        {"old": Status.DEPRECATED, "off": Status.DISABLED},
    )
    with pytest.raises(graph.UnknownServiceError) as unknown:
        graph.start_set(m, ["apii"])
    assert str(unknown.value) == 'no service named "apii" in /srv/svc.toml; did you mean "api"?'
    assert isinstance(unknown.value, KeyError)
    with pytest.raises(
        graph.InactiveServiceError, match='"old" is deprecated and is never started; start "api" instead'
    ):
        graph.start_set(m, ["old"])
    with pytest.raises(graph.InactiveServiceError, match='"off" is disabled; set status = "active"'):
        graph.start_plan(m, ["off"])
    assert graph.start_set(m, None) == ["api"]


def test_stop_plan_takes_dependents_first_and_leaves_the_rest() -> None:
    assert graph.stop_plan(PLATFORM, ["api"]) == [["web"], ["worker"], ["api"]]
    assert graph.stop_plan(PLATFORM, ["pg"]) == [["web"], ["worker"], ["api", "crm"], ["pg"]]
    with pytest.raises(graph.UnknownServiceError):
        graph.stop_plan(PLATFORM, ["nope"])


def test_stop_all_is_the_reverse_start_order() -> None:
    assert graph.stop_plan(PLATFORM, None) == list(reversed(graph.start_plan(PLATFORM, None)))


def test_stop_all_includes_inactive_services() -> None:
    m = make({"api": ("back", []), "old": ("front", [])}, {"old": Status.DEPRECATED})
    assert graph.stop_plan(m, None) == [["old"], ["api"]]
    assert graph.stop_plan(m, ["old"]) == [["old"]]


def test_cycles_are_found_and_printed() -> None:
    assert graph.find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert graph.find_cycle({"a": ["a"]}) == ["a", "a"]
    assert graph.find_cycle({"a": ["b"], "b": [], "c": ["a", "missing"]}) is None
    assert graph.find_cycles({"x": ["y"], "y": ["x"], "p": ["q"], "q": ["r"], "r": ["q"]}) == [
        ["x", "y", "x"],
        ["q", "r", "q"],
    ]
    assert graph.format_cycle(["a", "b", "c", "a"]) == "a -> b -> c -> a"


def test_shortest_cycle_through_the_first_member() -> None:
    deps = {"a": ["b"], "b": ["c", "a"], "c": ["a"]}
    assert graph.find_cycle(deps) == ["a", "b", "a"]


def test_a_long_chain_does_not_hit_the_recursion_limit() -> None:
    deps = {f"s{i}": [f"s{i + 1}"] for i in range(5000)} | {"s5000": ["s0"]}
    cycle = graph.find_cycle(deps)
    assert cycle is not None and len(cycle) == 5002


def test_plan_of_a_cyclic_graph_raises() -> None:
    m = make({"a": ("back", ["b"]), "b": ("back", ["a"])})
    with pytest.raises(graph.CycleError, match="a -> b -> a"):
        graph.start_plan(m, None)


# --------------------------------------------------------------------------- properties


@st.composite
def valid_manifests(draw: st.DrawFn) -> Manifest:
    """Acyclic (a service depends only on earlier ones) and tier-monotone (on the same or earlier tiers)."""
    count = draw(st.integers(1, 12))
    tiers = sorted(draw(st.lists(st.sampled_from(list(TIERS)), min_size=count, max_size=count)), key=TIERS.__getitem__)
    services: dict[str, tuple[str, list[str]]] = {}
    for i, tier in enumerate(tiers):
        deps = draw(st.lists(st.sampled_from([f"s{j}" for j in range(i)]), unique=True)) if i else []
        services[f"s{i}"] = (tier, deps)
    order = draw(st.permutations(list(services)))  # file order differs from dependency order
    return make({name: services[name] for name in order})


@settings(max_examples=200, deadline=None)
@given(valid_manifests(), st.data())
def test_every_start_plan_respects_dependencies_and_tiers(m: Manifest, data: st.DataObject) -> None:
    names = data.draw(st.none() | st.lists(st.sampled_from(list(m.services)), unique=True))
    plan = graph.start_plan(m, names)
    step_of = {name: i for i, step in enumerate(plan) for name in step}
    assert sorted(step_of) == sorted(graph.start_set(m, names))
    assert sum(len(step) for step in plan) == len(step_of)  # nobody twice
    for name, step in step_of.items():
        spec = m.services[name]
        for dep in spec.depends_on:
            assert step_of[dep] < step
        for other, other_step in step_of.items():
            if m.tier_order(m.services[other]) < m.tier_order(spec):
                assert other_step < step
        # as early as possible: something in the previous step is a prerequisite
        if step:
            assert graph.prerequisites(m, name, step_of) & set(plan[step - 1])


@settings(max_examples=200, deadline=None)
@given(valid_manifests(), st.data())
def test_every_stop_plan_stops_dependents_first(m: Manifest, data: st.DataObject) -> None:
    names = data.draw(st.lists(st.sampled_from(list(m.services)), unique=True, min_size=1))
    plan = graph.stop_plan(m, names)
    step_of = {name: i for i, step in enumerate(plan) for name in step}
    assert set(step_of) == set(names).union(*(graph.dependents(m, n) for n in names))
    for name in step_of:
        for dependent in graph.dependents(m, name):
            assert step_of[dependent] < step_of[name]
