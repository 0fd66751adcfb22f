"""How long `svc up` may wait: a bound derived from the manifest, so an `up` always ends.

The default of ``svc up --timeout`` (and of `svc restart`) is the worst case of a
start that does settle:

- along the longest chain of services that wait for one another (``depends_on``, and
  every earlier tier of the same `up`), each service's own worst case: ``start_limit``
  + 1 attempts of up to ``ready_timeout`` each, and the longest backoff delay between
  them (a crash loop ends in `failed` within that);
- plus the longest chain of ``stop_timeout`` (what is stopping, or restarting with its
  dependents, stops first);
- plus a margin for spawning: 10 s and 50 ms a service.

A service that settles at all settles within it; one that does not (a program that
keeps crashing just slower than its start-limit window) is named when the bound is
reached.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from supervisord_lite.core.model import Manifest, ServiceSpec
from supervisord_lite.core.policy import backoff_step

SPAWN_MARGIN = 10.0  # seconds, plus SPAWN_PER_SERVICE for each service of the set
SPAWN_PER_SERVICE = 0.05


def start_budget(spec: ServiceSpec) -> float:
    """The longest one service takes to settle once it may start: every attempt the
    start limit allows, each up to ready_timeout, with the backoff delays between them."""
    delays = sum(backoff_step(spec.backoff, i) for i in range(spec.start_limit))
    return delays + (spec.start_limit + 1) * spec.ready_timeout


def longest_chain(manifest: Manifest, names: Collection[str], weight: Callable[[ServiceSpec], float]) -> float:
    """The largest sum of ``weight`` along a chain of services of ``names`` that wait for
    one another (``depends_on``, and every earlier tier of the same `up`). Linear in the
    number of services and dependencies."""
    member_set = set(names)
    members = [n for n in manifest.services if n in member_set]
    orders = {n: manifest.tier_order(manifest.services[n]) for n in members}
    by_level: dict[int, list[str]] = {}
    for name in members:
        by_level.setdefault(orders[name], []).append(name)
    chain: dict[str, float] = {}
    below = 0.0  # the longest chain ending in a lower tier order
    for level in sorted(by_level):
        best = below
        for root in by_level[level]:
            stack = [root]
            while stack:  # depth first over depends_on inside this tier (a valid manifest has no cycle)
                name = stack[-1]
                if name in chain:
                    stack.pop()
                    continue
                deps = [d for d in manifest.services[name].depends_on if d in member_set]
                todo = [d for d in deps if d not in chain and orders[d] == level and d not in stack]
                if todo:
                    stack.extend(todo)
                    continue
                stack.pop()
                chain[name] = weight(manifest.services[name]) + max([below, *(chain.get(d, 0.0) for d in deps)])
                best = max(best, chain[name])
        below = best
    return below


def settle_budget(manifest: Manifest, names: Collection[str]) -> float:
    """The default bound, in seconds, of an `up` or `restart` of ``names`` (a start set)."""
    known = [n for n in names if n in manifest.services]
    return (
        longest_chain(manifest, known, start_budget)
        + longest_chain(manifest, known, lambda s: s.stop_timeout)
        + SPAWN_MARGIN
        + SPAWN_PER_SERVICE * len(known)
    )
