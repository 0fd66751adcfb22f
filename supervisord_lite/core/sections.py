"""The manifest's ``[supervisor]`` and ``[tiers]`` tables as model values.

Every key left out takes the model's default (``core/model.py``); a bad value is
reported and the default stands in.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from supervisord_lite.core.limits import MAX_LOG_BACKUPS, MIN_PROBE_INTERVAL
from supervisord_lite.core.locate import ProblemLog
from supervisord_lite.core.model import SupervisorSpec, Tier
from supervisord_lite.core.tables import TableReader
from supervisord_lite.core.values import parse_ports, path_in, resolve_path
from supervisord_lite.core.wording import describe

SUPERVISOR_KEYS = (
    "name", "state_dir", "metrics", "probe_interval", "log_max_bytes", "log_backups", "http_logs", "restore", "instance",
    "dotenv",
)  # fmt: skip
TIER_KEYS = ("order", "ports", "description")


def supervisor_section(problems: ProblemLog, data: Any, path: Path) -> SupervisorSpec:
    """``[supervisor]`` of the manifest at ``path``: its name defaults to the file's
    stem, its state_dir is resolved against the file's folder."""
    model = SupervisorSpec()
    default = replace(model, name=path.stem, state_dir=resolve_path(path.parent, str(model.state_dir)))
    if data is None:
        return default
    if not isinstance(data, dict):
        problems.error(("supervisor",), f"expected a table, got {describe(data)}")
        return default
    t = TableReader(problems, ("supervisor",), data, SUPERVISOR_KEYS)
    metrics = t.string("metrics", default.metrics)
    if metrics and not _valid_address(metrics):
        t.error("metrics", f'"{metrics}" is not HOST:PORT with a port in 1-65535 (use "" to turn metrics off)')
        metrics = default.metrics
    name = t.string("name", default.name)
    if not name.strip():
        t.error("name", "the name is empty")
        name = default.name
    return SupervisorSpec(
        name=name,
        state_dir=t.read("state_dir", default.state_dir, "a path", path_in(path.parent)),
        metrics=metrics,
        probe_interval=t.duration("probe_interval", default.probe_interval, positive=True, shortest=MIN_PROBE_INTERVAL),
        log_max_bytes=t.size("log_max_bytes", default.log_max_bytes),
        log_backups=t.integer("log_backups", default.log_backups, low=0, high=MAX_LOG_BACKUPS),
        http_logs=t.boolean("http_logs", default.http_logs),
        restore=t.boolean("restore", default.restore),
        instance=t.integer("instance", default.instance, low=0, high=650),
        dotenv=t.boolean("dotenv", default.dotenv),
    )


def _valid_address(text: str) -> bool:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):(\d{1,5})", text)
    return match is not None and 1 <= int(match.group(2)) <= 65535


def tiers_section(problems: ProblemLog, data: Any) -> dict[str, Tier] | None:
    """The declared tiers sorted by order, or None when the manifest declares none."""
    if data is None or data == {}:
        return None
    if not isinstance(data, dict):
        problems.error(("tiers",), f"expected a table of tiers, got {describe(data)}")
        return None
    tiers = []
    for name, body in data.items():
        path = ("tiers", name)
        if not isinstance(body, dict):
            problems.error(path, f"expected a table with order, ports, description, got {describe(body)}")
            continue
        t = TableReader(problems, path, body, TIER_KEYS)
        if "order" not in body:
            problems.error(path, 'missing key "order" (an integer: lower tiers start first)')
        default = Tier(name, order=0)  # order 0 only stands in for a missing or bad one, reported above
        ports = parse_ports(problems, t.at("ports"), body["ports"]) if "ports" in body else default.ports
        tiers.append(Tier(name, t.integer("order", default.order), ports, t.string("description", default.description)))
    tiers.sort(key=lambda tier: tier.order)  # stable: file order within one order
    return {tier.name: tier for tier in tiers}
