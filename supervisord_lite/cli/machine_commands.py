"""The machine's view across projects: ``svc ls`` and ``svc ports --all``.

Both read this user's registry (``host.registry``): every manifest ``svc check``,
``svc up`` or a daemon recorded. Live facts come from the machine itself: whether a
recorded daemon pid still lives, and which ports something listens on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from supervisord_lite.cli.app import main

if TYPE_CHECKING:
    from supervisord_lite.core.machine import Claim

F = TypeVar("F", bound=Callable[..., Any])
INSTANCE_ENV = "SVC_INSTANCE_NUMBER"  # core.instances.ENV_VAR (not imported: keeps svc --help fast)


def _choose_instance(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """``--instance N`` is ``$SVC_INSTANCE_NUMBER=N`` for this command and the daemon it starts."""
    if value is not None:
        os.environ[INSTANCE_ENV] = str(value)
    return value


def instance_option(func: F) -> F:
    """Add ``--instance N``: side-by-side instance N of the manifest (its ports shifted, see README)."""
    return click.option(
        "--instance",
        type=click.IntRange(0, 650),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_choose_instance,
        help="Instance N of the manifest: every port shifted, its own state_dir (default: $SVC_INSTANCE_NUMBER, "
        "else [supervisor] instance, else 0).",
    )(func)


def _project_row(claim: Claim, listening: set[int], others: list[Claim]) -> dict[str, Any]:
    from supervisord_lite.core.machine import overlaps  # lazy: keeps svc --help fast
    from supervisord_lite.host import registry

    pid = registry.running_daemon(claim)
    return {
        "name": claim.name,
        "manifest": claim.manifest,
        "instance": claim.instance,
        "daemon_pid": pid,
        "daemon_running": pid is not None,
        "metrics": claim.metrics,
        "services": claim.services,
        "ranges": [{"tier": r.tier, "range": r.text, "line": r.line} for r in claim.ranges],
        "ports": [
            {"service": p.service, "port": p.port, "line": p.line, "listening": p.port in listening}
            for p in claim.ports
        ],
        "overlaps": [o.message for other in others if other.key != claim.key for o in overlaps(claim, other)],
    }


def machine_guide() -> dict[str, Any]:
    """Every registered project with its ranges, ports, live state and overlaps."""
    from supervisord_lite.host import portinfo, registry  # lazy: psutil is slow to import

    claims = sorted(registry.claims(), key=lambda c: (c.name, c.manifest, c.instance))
    listening = portinfo.listening_ports()
    return {"projects": [_project_row(c, listening, claims) for c in claims]}


def render_machine_markdown(guide: dict[str, Any]) -> str:
    out = ["# Port allocation on this machine", ""]
    projects = guide["projects"]
    if not projects:
        out.append("No project is registered yet (`svc check` or `svc up` records one).")
        return "\n".join(out) + "\n"
    for p in projects:
        inst = f" (instance {p['instance']})" if p["instance"] else ""
        daemon = f"daemon pid {p['daemon_pid']}" if p["daemon_running"] else "no daemon"
        out += [f"## {p['name']}{inst}", "", f"`{p['manifest']}`: {daemon}, metrics {p['metrics'] or 'off'}", ""]
        if p["ranges"]:
            out.append("Tier ranges: " + ", ".join(f"{r['tier']} {r['range']}" for r in p["ranges"]))
            out.append("")
        out += ["| Service | Port | Live |", "|---|---|---|"]
        for s in p["ports"]:
            out.append(f"| {s['service']} | {s['port']} | {'listening' if s['listening'] else '-'} |")
        out.append("")
        for message in p["overlaps"]:
            out.append(f"- **overlap**: {message}")
        if p["overlaps"]:
            out.append("")
    return "\n".join(out)


@main.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_platforms(as_json: bool) -> None:
    """List every platform of this user the registry knows: manifest, instance, daemon, metrics."""
    rows = machine_guide()["projects"]
    if as_json:
        keys = ("name", "manifest", "instance", "daemon_pid", "daemon_running", "services", "metrics")
        click.echo(json.dumps([{k: r[k] for k in keys} for r in rows], indent=2))
        return
    if not rows:
        click.echo("no platform registered yet (`svc check` or `svc up` records one)")
        return
    click.echo(f"{'NAME':<20} {'INSTANCE':<8} {'DAEMON':<14} {'SERVICES':<8} {'METRICS':<22} MANIFEST")
    for r in rows:
        daemon = f"pid {r['daemon_pid']}" if r["daemon_running"] else "stopped"
        click.echo(f"{r['name']:<20} {r['instance']:<8} {daemon:<14} {r['services']:<8} {r['metrics'] or 'off':<22} {r['manifest']}")
