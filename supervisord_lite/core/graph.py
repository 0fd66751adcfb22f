"""Start and stop order (services start by tier, then by dependency): dependency closure, tier sequencing, cycles.

Pure functions over ``model.Manifest``. A start plan groups services in steps: a
service comes after everything it ``depends_on`` and every service of an earlier
tier in the same start set. Stopping runs the same steps backwards, dependents first.
When a running service may actually start (dependencies ready, earlier tiers
settled) is ``core.startgate``'s.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from supervisord_lite.core.model import Manifest, Status


class SelectionError(KeyError):
    """A service name given on the command line that cannot be started or stopped."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return self.message


class UnknownServiceError(SelectionError):
    def __init__(self, name: str, manifest: Manifest) -> None:
        import difflib  # lazy: only a typo needs it

        close = difflib.get_close_matches(name, list(manifest.services), n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        super().__init__(f'no service named "{name}" in {manifest.path}{hint}')
        self.name = name


class InactiveServiceError(SelectionError):
    def __init__(self, name: str, manifest: Manifest) -> None:
        spec = manifest.services[name]
        if spec.status is Status.DEPRECATED:
            instead = f'; start "{spec.replaced_by}" instead' if spec.replaced_by else ""
            message = f'service "{name}" is deprecated and is never started{instead}'
        else:
            message = f'service "{name}" is disabled; set status = "active" in {manifest.path} to start it'
        super().__init__(message)
        self.name = name


class CycleError(ValueError):
    """The dependency graph has a cycle (a validated manifest never has one)."""


def _known(m: Manifest, names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    for name in names:
        if name not in m.services:
            raise UnknownServiceError(name, m)
    return names


def _in_file_order(m: Manifest, members: Collection[str]) -> list[str]:
    return [name for name in m.services if name in members]


def start_set(m: Manifest, names: Iterable[str] | None = None) -> list[str]:
    """The named services and everything they need, transitively, in file order.

    ``None`` means every active service.

    :raises UnknownServiceError: a name is not in the manifest.
    :raises InactiveServiceError: a name is deprecated or disabled.
    """
    if names is None:
        return [s.name for s in m.active()]
    requested = _known(m, names)
    for name in requested:
        if not m.services[name].is_active:
            raise InactiveServiceError(name, m)
    members: set[str] = set()
    todo = list(requested)
    while todo:
        name = todo.pop()
        if name in members:
            continue
        members.add(name)
        todo.extend(d for d in m.services[name].depends_on if d in m.services)
    return _in_file_order(m, members)


_ORDERS: dict[int, tuple[Manifest, dict[str, int]]] = {}


def _tier_orders(m: Manifest) -> dict[str, int]:
    """Each service's tier order, computed once per manifest (start plans ask for it
    once per pair of services, which adds up with hundreds of them)."""
    cached = _ORDERS.get(id(m))
    if cached is None or cached[0] is not m:
        if len(_ORDERS) > 8:
            _ORDERS.clear()
        cached = _ORDERS[id(m)] = (m, {n: m.tier_order(spec) for n, spec in m.services.items()})
    return cached[1]


def prerequisites(m: Manifest, name: str, start_set: Collection[str]) -> set[str]:
    """What must be ready before ``name`` starts: its dependencies and, within
    ``start_set``, every service of an earlier tier."""
    orders = _tier_orders(m)
    order = orders[name]
    earlier = {other for other in start_set if orders.get(other, order) < order}
    return set(m.services[name].depends_on) | earlier


def _steps(m: Manifest, members: list[str]) -> list[list[str]]:
    """Group ``members`` into steps; each step only needs members of earlier steps.

    Linear in the members and their dependencies: "every member of an earlier tier is
    done" is one comparison with the lowest tier order not yet done."""
    member_set = set(members)
    orders = _tier_orders(m)
    deps = {name: [d for d in m.services[name].depends_on if d in member_set] for name in members}
    undone_in_order: dict[int, int] = {}
    for name in members:
        undone_in_order[orders[name]] = undone_in_order.get(orders[name], 0) + 1
    done: set[str] = set()
    remaining = members
    steps: list[list[str]] = []
    while remaining:
        lowest = min(order for order, count in undone_in_order.items() if count)
        step = [name for name in remaining if orders[name] <= lowest and all(d in done for d in deps[name])]
        if not step:
            needs = {name: prerequisites(m, name, member_set) & member_set for name in remaining}
            cycle = find_cycle(needs)
            shown = format_cycle(cycle) if cycle else ", ".join(remaining)
            raise CycleError(f"dependency cycle: {shown}")
        steps.append(step)
        done.update(step)
        for name in step:
            undone_in_order[orders[name]] -= 1
        remaining = [name for name in remaining if name not in done]
    return steps


def start_plan(m: Manifest, names: Iterable[str] | None = None) -> list[list[str]]:
    """Steps of services that may start concurrently, in order (see ``start_set``)."""
    return _steps(m, start_set(m, names))


def dependents(m: Manifest, name: str) -> set[str]:
    """Every service that depends on ``name``, directly or transitively."""
    users: dict[str, set[str]] = {}
    for spec in m.services.values():
        for dep in spec.depends_on:
            users.setdefault(dep, set()).add(spec.name)
    found: set[str] = set()
    todo = list(users.get(name, ()))
    while todo:
        user = todo.pop()
        if user not in found:
            found.add(user)
            todo.extend(users.get(user, ()))
    return found


def stop_plan(m: Manifest, names: Iterable[str] | None = None) -> list[list[str]]:
    """Steps to stop the named services and all their dependents, dependents first.

    ``None`` means every service of the manifest (stopping one that does not run is
    the caller's no-op), in reverse start order. Inactive names are accepted.

    :raises UnknownServiceError: a name is not in the manifest.
    """
    if names is None:
        members = list(m.services)
    else:
        chosen: set[str] = set()
        for name in _known(m, names):
            chosen.add(name)
            chosen |= dependents(m, name)
        members = _in_file_order(m, chosen)
    return list(reversed(_steps(m, members)))


def find_cycles(deps: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle per strongly connected component, each as ``[a, b, c, a]``.

    Edges to names missing from ``deps`` are ignored. Iterative (Tarjan), so a
    long chain cannot exhaust the recursion limit.
    """
    graph = {node: [d for d in targets if d in deps] for node, targets in deps.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph[target])))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
    order = {node: i for i, node in enumerate(graph)}
    cycles = []
    for component in components:
        members = set(component)
        start = min(component, key=order.__getitem__)
        if len(component) > 1 or start in graph[start]:
            cycles.append(_cycle_through(graph, start, members))
    cycles.sort(key=lambda c: order[c[0]])
    return cycles


def _cycle_through(graph: Mapping[str, list[str]], start: str, members: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one strongly connected component."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in graph[node]:
                if target not in members:
                    continue
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError("a strongly connected component always has a cycle")  # pragma: no cover


def find_cycle(deps: Mapping[str, Iterable[str]]) -> list[str] | None:
    """The first dependency cycle as ``[a, b, c, a]``, or None."""
    cycles = find_cycles(deps)
    return cycles[0] if cycles else None


def format_cycle(cycle: list[str]) -> str:
    return " -> ".join(cycle)
