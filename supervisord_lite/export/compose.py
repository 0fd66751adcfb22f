"""The manifest as one Compose file (``compose.yaml``).

One service per active service; ``depends_on`` with the condition that matches the
dependency (healthy, completed for a oneshot, started when it has no health check),
plus the services of the previous tier so tiers still start in order; a
``healthcheck`` from the readiness probe; ports, environment, restart policy, stop
signal and grace period. Pure: returns the file's text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from supervisord_lite.core.model import Manifest, ServiceSpec
from supervisord_lite.export.common import (
    ExportOptions,
    Selection,
    Target,
    comment_lines,
    container_command,
    container_env,
    dollars_escaped,
    earlier_tier_services,
    header,
    is_oneshot,
    left_out_lines,
    probe_check,
    seconds_text,
    select,
    to_yaml,
    unexpressed_readiness,
    yaml_key,
)

FILENAME = "compose.yaml"

NOTES = (
    "Check it with `docker compose config` (or docker-compose config); start it with `docker compose up -d`.",
    "Ports are published on 127.0.0.1 only, as on the developer machine: drop the address to publish them",
    "on every interface. Inside the network, services reach each other by service name, not localhost.",
    "Health checks run inside the containers: tcp checks need bash, http checks need curl in the image.",
    "depends_on also lists the services of the previous tier, so tiers start in order as with `svc up`.",
)


def healthcheck(spec: ServiceSpec) -> dict[str, Any] | None:
    """The readiness probe as a Compose healthcheck, or None when it has no check Compose can run."""
    check = probe_check(spec.ready)
    if check is None:
        return None
    kind, value = check
    if kind == "http":
        test = ["CMD", "curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{spec.port}{value}"]
    elif kind == "exec":
        test = ["CMD", *value]
    else:
        test = ["CMD", "bash", "-c", f": </dev/tcp/127.0.0.1/{spec.port}"]
    return {
        "test": test,
        "interval": seconds_text(spec.probe_interval),
        "timeout": seconds_text(spec.ready.timeout),
        "retries": spec.unhealthy_threshold,
        "start_period": seconds_text(spec.ready_timeout),
    }


def _relative(path: Path, out_dir: Path) -> str:
    """A host path as Compose resolves it: relative to the folder of the compose file."""
    rel = os.path.relpath(path, out_dir.absolute())
    return rel if rel.startswith(".") else f"./{rel}"


def _condition(dep: ServiceSpec) -> str:
    if is_oneshot(dep):
        return "service_completed_successfully"
    return "service_healthy" if healthcheck(dep) is not None else "service_started"


def service_body(
    m: Manifest, spec: ServiceSpec, selection: Selection, tier_deps: list[str], options: ExportOptions
) -> tuple[dict[str, Any], list[str]]:
    """One Compose service and the comments that go above it."""
    notes = [f"tier {spec.tier}" + (f": {spec.title or spec.description}" if spec.title or spec.description else "")]
    body: dict[str, Any] = {}
    if spec.export.image:
        body["image"] = spec.export.image
    if spec.export.build:
        body["build"] = _relative(spec.export.build, options.out_dir)
    command = container_command(spec)
    if command is not None:
        body["command"] = list(command)
    body["environment"] = container_env(spec)
    if spec.env_files:
        body["env_file"] = [_relative(file, options.out_dir) for file in spec.env_files]
    if spec.port is not None:
        body["ports"] = [f"127.0.0.1:{spec.port}:{spec.port}"]

    depends: dict[str, dict[str, str]] = {}
    for name in [*spec.depends_on, *tier_deps]:
        if name in depends:
            continue
        if name not in selection.names:
            notes.append(f"needs {name}, which is left out of this file")
            continue
        depends[name] = {"condition": _condition(m.services[name])}
    if depends:
        body["depends_on"] = depends

    check = healthcheck(spec)
    if check is not None:
        body["healthcheck"] = check
    if (unexpressed := unexpressed_readiness(spec)) is not None:
        notes.append(unexpressed)
    elif check is None and not is_oneshot(spec):
        notes.append("no health check: dependents wait only until it has started")
    body["restart"] = spec.restart.value
    body["stop_signal"] = spec.stop_signal.name
    body["stop_grace_period"] = seconds_text(spec.stop_timeout)
    if spec.user:
        notes.append(f"user = {spec.user!r} is not carried over: the image decides its user")
    return dollars_escaped(body), notes


def render(m: Manifest, options: ExportOptions) -> dict[str, str]:
    """``{"compose.yaml": text}``.

    :raises ExportError: active services lack an image or build context (unless allowed).
    """
    selection = select(m, Target.COMPOSE, options.allow_missing_images)
    tiers = earlier_tier_services(m, selection.services)
    parts = ["\n".join(header(m, Target.COMPOSE, [*NOTES, *left_out_lines(selection.left_out)])) + "\n"]
    if not selection.services:
        parts.append("services: {}\n")
    else:
        parts.append("services:\n")
        for spec in selection.services:
            body, notes = service_body(m, spec, selection, tiers[spec.name], options)
            parts.append(f"  {yaml_key(spec.name)}:\n")
            parts.append(comment_lines(notes, indent=4))
            parts.append(to_yaml(body, indent=4))
    return {FILENAME: "".join(parts)}
