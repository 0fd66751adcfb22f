"""The rules that span services: ports, tiers, dependencies, replacements.

Each rule reports to the ``ProblemLog`` at the key the user has to change. They run
on the services as built, bad values already replaced by defaults, so one bad key
does not hide the problems of the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from supervisord_lite.core import graph
from supervisord_lite.core.locate import ProblemLog
from supervisord_lite.core.model import ServiceSpec, Status, SupervisorSpec, Tier
from supervisord_lite.core.wording import did_you_mean

Services = Mapping[str, ServiceSpec]


def _rule_unique_ports(problems: ProblemLog, services: Services, tiers: Mapping[str, Tier]) -> None:
    owner: dict[int, ServiceSpec] = {}
    for spec in services.values():
        if spec.port is None:
            continue
        first = owner.setdefault(spec.port, spec)
        if first is not spec:
            kept = " (a deprecated service keeps its port reserved)" if first.status is Status.DEPRECATED else ""
            problems.error(("services", spec.name, "port"), f"port {spec.port} is already taken by {first.name}{kept}")


def _rule_ports_in_tier(problems: ProblemLog, services: Services, tiers: Mapping[str, Tier]) -> None:
    for spec in services.values():
        tier = tiers.get(spec.tier)
        if spec.port is not None and tier is not None and not tier.allows(spec.port):
            ranges = ", ".join(str(r) for r in tier.ports)
            problems.error(
                ("services", spec.name, "port"),
                f"port {spec.port} is outside the ranges of tier {tier.name} ({ranges})",
            )


def _rule_known_dependencies(problems: ProblemLog, services: Services, tiers: Mapping[str, Tier]) -> None:
    for spec in services.values():
        for dep in spec.depends_on:
            if dep not in services:
                problems.error(
                    ("services", spec.name, "depends_on"),
                    f'depends on "{dep}", but no service has that name{did_you_mean(dep, services)}',
                )


def _rule_no_cycles(problems: ProblemLog, services: Services, tiers: Mapping[str, Tier]) -> None:
    for cycle in graph.find_cycles({name: spec.depends_on for name, spec in services.items()}):
        problems.error(("services", cycle[0], "depends_on"), f"dependency cycle: {graph.format_cycle(cycle)}")


def _rule_no_tier_inversion(problems: ProblemLog, services: Services, tiers: Mapping[str, Tier]) -> None:
    for spec in services.values():
        own = tiers.get(spec.tier)
        for dep in spec.depends_on:
            other = services.get(dep)
            theirs = tiers.get(other.tier) if other else None
            if own and theirs and theirs.order > own.order:
                problems.error(
                    ("services", spec.name, "depends_on"),
                    f"{spec.name} (tier {own.name}, order {own.order}) depends on {dep} of the later tier "
                    f"{theirs.name} (order {theirs.order}); a service can only depend on its own or earlier tiers",
                )


def _rule_active_needs_active(problems: ProblemLog, services: Services, tiers: Mapping[str, Tier]) -> None:
    for spec in services.values():
        if not spec.is_active:
            continue
        for dep in spec.depends_on:
            other = services.get(dep)
            if other is None or other.is_active:
                continue
            if other.status is Status.DEPRECATED:
                successor = services.get(other.replaced_by) if other.replaced_by else None
                usable = successor is not None and successor.is_active and successor.name != spec.name
                instead = f'; depend on "{successor.name}" instead' if usable and successor else ""
                why = f"which is deprecated and never starts{instead}"
            else:
                why = 'which is disabled; set its status = "active" or drop the dependency'
            problems.error(("services", spec.name, "depends_on"), f"depends on {dep}, {why}")


def _rule_replacements_exist(problems: ProblemLog, services: Services, tiers: Mapping[str, Tier]) -> None:
    for spec in services.values():
        target = spec.replaced_by
        if target is None:
            continue
        path = ("services", spec.name, "replaced_by")
        if target == spec.name:
            problems.error(path, "a service cannot replace itself")
        elif target not in services:
            problems.error(path, f'"{target}" names no service{did_you_mean(target, services)}')


def _rule_metrics_port_is_not_a_service_port(problems: ProblemLog, services: Services, sup: SupervisorSpec) -> None:
    try:
        address = sup.metrics_address
    except ValueError:  # a malformed address is reported by the [supervisor] checks
        return
    if address is None:
        return
    for spec in services.values():
        if spec.port == address[1]:
            problems.error(
                ("services", spec.name, "port"),
                f"port {spec.port} is the supervisor's own metrics port (supervisor.metrics = \"{sup.metrics}\")",
            )


RULES: tuple[Callable[[ProblemLog, Services, Mapping[str, Tier]], None], ...] = (
    _rule_unique_ports,
    _rule_ports_in_tier,
    _rule_known_dependencies,
    _rule_no_cycles,
    _rule_no_tier_inversion,
    _rule_active_needs_active,
    _rule_replacements_exist,
)


def apply_rules(problems: ProblemLog, services: Services, tiers: Mapping[str, Tier], sup: SupervisorSpec) -> None:
    """Every cross-service rule, in a fixed order."""
    for rule in RULES:
        rule(problems, services, tiers)
    _rule_metrics_port_is_not_a_service_port(problems, services, sup)
