"""Commands that work without a daemon: ``svc check``, ``config``, ``ports``, ``who``, ``add``.

Each is a thin shell: read arguments, call the pure core (manifest, portguide,
editing), print, choose the exit code. This module is imported for ``svc --help``:
modules beyond click are imported inside the commands that use them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from supervisord_lite.cli.app import (
    echo_problems,
    fail,
    find_manifest_path,
    load_or_fail,
    main,
    manifest_option,
    manifest_overlays,
    resolve_manifest_path,
)
from supervisord_lite.cli.completion import complete_services
from supervisord_lite.cli.machine_commands import instance_option
from supervisord_lite.core.exitcodes import ExitCode

if TYPE_CHECKING:
    from supervisord_lite.core.model import Manifest, ServiceSpec
    from supervisord_lite.core.problems import Problem
    from supervisord_lite.core.snapshot import ServiceSnapshot
    from supervisord_lite.host.portinfo import Listener


def _live_snapshot(manifest: Manifest) -> dict[str, ServiceSnapshot] | None:
    """The running daemon's state per service, or None when no daemon answers."""
    from supervisord_lite.cli.client import fetch_snapshot  # lazy: keeps svc --help fast

    snapshot = fetch_snapshot(manifest, timeout=5.0)
    if snapshot is None:
        return None
    return {s.name: s for s in snapshot.services}


def _own_pids(live: dict[str, ServiceSnapshot] | None) -> set[int]:
    return {snap.pid for snap in (live or {}).values() if snap.pid is not None}


@main.command()
@manifest_option
@click.option("--strict", is_flag=True, help="Exit 1 when there are warnings (and no errors).")
def check(manifest: Path | None, strict: bool) -> None:
    """Validate the manifest: every problem, one a line. Exit 2 on errors.

    Warns about ports some process outside the manifest already listens on, and about
    ports and tier ranges another registered project claims (`svc ports --all`).
    """
    from supervisord_lite.core.manifest import check_manifest  # lazy: keeps svc --help fast
    from supervisord_lite.cli.render import manifest_summary_line
    from supervisord_lite.host.portinfo import ephemeral_warnings, port_warnings

    path = resolve_manifest_path(manifest)

    def live_checks(loaded: Manifest) -> list[Problem]:
        return port_warnings(loaded, _own_pids(_live_snapshot(loaded))) + ephemeral_warnings(loaded)

    loaded, problems = check_manifest(path, live_checks=live_checks, overlays=manifest_overlays())
    if loaded is not None:
        problems = problems + _registry_warnings(loaded)
    echo_problems(problems, err=False)
    click.echo(manifest_summary_line(path, loaded, problems))
    if any(p.is_error for p in problems):
        sys.exit(ExitCode.USAGE)
    if strict and problems:
        sys.exit(ExitCode.FAILED)


def _registry_warnings(loaded: Manifest) -> list[Problem]:
    """Record the manifest in this user's registry; warn where it collides with another project."""
    from supervisord_lite.core.machine import claim_of, overlap_warnings  # lazy: keeps svc --help fast
    from supervisord_lite.host import registry

    others = registry.record(loaded)
    return overlap_warnings(claim_of(loaded, registry.manifest_text(loaded.path)), others, file=str(loaded.path))


@main.command()
@manifest_option
@click.option("--unresolved", is_flag=True, help="The merged files as written: no ${VAR}, {port} or default filled in.")
@click.option("--origin", is_flag=True, help="Each value as written, with the file and line it came from.")
def config(manifest: Path | None, unresolved: bool, origin: bool) -> None:
    """Print the resolved manifest, defaults filled in, as TOML (svc.local.toml and every
    further -f merged over the manifest)."""
    import tomli_w  # lazy: keeps svc --help fast

    from supervisord_lite.core.serialise import manifest_to_dict

    path = resolve_manifest_path(manifest)
    if unresolved or origin:
        _print_as_written(path, origin)
        return
    loaded = load_or_fail(path)
    click.echo(tomli_w.dumps(manifest_to_dict(loaded)), nl=False)


def _print_as_written(path: Path, origin: bool) -> None:
    """The merged document (a file that does not parse: its problems, exit 2); with
    ``origin``, one ``key = value  # file:line`` line per value."""
    import tomli_w  # lazy: keeps svc --help fast

    from supervisord_lite.core.manifest import merged_sources
    from supervisord_lite.core.problems import ManifestError
    from supervisord_lite.core.sources import leaf_paths

    try:
        merged = merged_sources(path, manifest_overlays())
    except ManifestError as exc:
        echo_problems(exc.problems, err=True)
        sys.exit(ExitCode.USAGE)
    if not origin:
        click.echo(tomli_w.dumps(merged.data), nl=False)
        return
    for key_path, value in leaf_paths(merged.data):
        file, line = merged.where(key_path)
        key = ".".join(_toml_key(part) for part in key_path)
        value_text = " ".join(tomli_w.dumps({"v": value}).partition("=")[2].split("\n")).strip()
        click.echo(f"{key} = {value_text}  # {file}" + (f":{line}" if line is not None else ""))


def _toml_key(part: str) -> str:
    """One part of a dotted key as TOML writes it."""
    import json  # lazy: keeps svc --help fast

    return part if part and all(c.isascii() and (c.isalnum() or c in "_-") for c in part) else json.dumps(part)


@main.command()
@manifest_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "json"]),
    default="markdown",
    show_default=True,
    help="Output format.",
)
@instance_option
@click.option("--all", "whole_machine", is_flag=True, help="Every registered project on this machine (svc ls), overlaps flagged.")
@click.argument("names", nargs=-1, shell_complete=complete_services)
def ports(manifest: Path | None, fmt: str, whole_machine: bool, names: tuple[str, ...]) -> None:
    """Print the port allocation guide, generated from the manifest (of the services
    NAMES select: services, tiers, @groups).

    With a running daemon, the status column shows each service's live state.
    """
    if whole_machine:
        import json

        from supervisord_lite.cli.machine_commands import machine_guide, render_machine_markdown

        guide = machine_guide()
        click.echo(json.dumps(guide, indent=2) + "\n" if fmt == "json" else render_machine_markdown(guide), nl=False)
        return
    from supervisord_lite.cli.selection import guide_of  # lazy: keeps svc --help fast
    from supervisord_lite.core import portguide

    path = resolve_manifest_path(manifest)
    loaded = load_or_fail(path)
    guide = guide_of(loaded, names, _live_snapshot(loaded), source=str(path))
    render = portguide.render_json if fmt == "json" else portguide.render_markdown
    click.echo(render(guide), nl=False)


def _declaring_service(path: Path, port: int) -> tuple[Manifest, ServiceSpec | None] | None:
    """The manifest (when one is found and valid) and its service on ``port``."""
    from supervisord_lite.core.manifest import load_manifest  # lazy: keeps svc --help fast
    from supervisord_lite.core.problems import ManifestError

    if not path.is_file():
        return None
    try:
        loaded = load_manifest(path, manifest_overlays())
    except ManifestError:
        click.echo(f"note: {path} has errors (run svc check); not matching the port to a service", err=True)
        return None
    return loaded, next((s for s in loaded.services.values() if s.port == port), None)


@main.command()
@click.argument("port", type=click.IntRange(1, 65535))
@manifest_option
def who(port: int, manifest: Path | None) -> None:
    """Say which process listens on PORT (and which service of ours declares it)."""
    from supervisord_lite.core.wording import one_line  # lazy: keeps svc --help fast
    from supervisord_lite.host import portinfo

    path = find_manifest_path(manifest)  # none is fine: who answers without a manifest too
    found = _declaring_service(path, port) if path is not None else None
    spec = found[1] if found else None
    declared = f"service {spec.name} of {path} declares it" if spec else ""
    listener = portinfo.listener_on(port)
    if listener is None:
        elsewhere = _registered_declarations(port, path)
        fail(f"nothing listens on port {port}" + (f" ({declared})" if declared else "")
             + "".join(f"\n{line}" for line in elsewhere), ExitCode.FAILED)  # fmt: skip

    click.echo(f"port:     {port}" + (f" ({listener.address})" if listener.address else ""))
    click.echo(f"pid:      {listener.pid if listener.pid is not None else 'unknown: ' + listener.hidden_why()}")
    click.echo(f"user:     {listener.user}")
    click.echo(f"command:  {one_line(listener.cmdline)}")
    if listener.started is not None:
        click.echo(f"started:  {_since(listener.started)}")
    if listener.owner:
        click.echo(f"owner:    {listener.owner}")
    elif listener.pid is not None:
        click.echo("owner:    not a service of any svc daemon in this machine's registry")
        for line in _registered_declarations(port, path):
            click.echo(line)
    if found is None:  # no manifest to compare with (or an invalid one, said above)
        return
    if spec is None:
        click.echo(f"service:  {_not_a_service(found[0], path, port, listener.pid)}")
        return
    click.echo(f"service:  {_declared_service_line(found[0], spec, path, listener)}")


def _since(started: float) -> str:
    """``2026-11-29 05:31:02 UTC (3m04s ago)``: when a listener's process started."""
    import time

    from supervisord_lite.cli.render import human_duration

    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
    return f"{stamp} ({human_duration(time.time() - started)} ago)"


def _declared_service_line(loaded: Manifest, spec: ServiceSpec, path: Path, listener: Listener) -> str:
    """Whether the listener on a port ``spec`` declares is that service's process, said plainly."""
    from supervisord_lite.host import portinfo

    where = f"{spec.name} (tier {spec.tier}, {path})"
    live = _live_snapshot(loaded)
    snap = (live or {}).get(spec.name)
    if listener.pid is None:
        return f"{where} declares this port; whether this listener is ours cannot be told (its process is hidden)"
    if snap is not None and snap.pid is not None and portinfo.belongs_to(listener.pid, snap.pid):
        return f"{spec.name} (ours: tier {spec.tier}, {path}, pid {snap.pid})"
    if live is None:
        why = f"no daemon of {path} is running"
    elif snap is None or snap.pid is None:
        why = f"{spec.name} is {snap.state.value if snap is not None else 'not loaded by the daemon'}"
    else:
        why = f"{spec.name} runs as pid {snap.pid}"
    return f"{where} declares this port, but this listener is not ours: {why}"


def _registered_declarations(port: int, path: Path | None) -> list[str]:
    """Other registered projects that declare ``port`` (none of them listens on it now)."""
    from supervisord_lite.core.machine import owners_of_port  # lazy: keeps svc --help fast
    from supervisord_lite.host import registry

    mine = str(path.resolve()) if path is not None else None
    return [
        f"declared by: service {service} of project {claim.label}"
        for claim, service in owners_of_port(port, registry.claims())
        if claim.manifest != mine
    ]


def _not_a_service(loaded: Manifest, path: Path, port: int, pid: int | None) -> str:
    """What ``svc who`` says of a port no service of the manifest declares."""
    from supervisord_lite.cli.client import fetch_snapshot  # lazy: keeps svc --help fast

    address = loaded.supervisor.metrics_address
    if address is not None and address[1] == port:
        snapshot = fetch_snapshot(loaded, timeout=5.0)
        if snapshot is not None and pid is not None and snapshot.pid == pid:
            return f"none: this is the svc daemon of {path} (its metrics endpoint, supervisor.metrics)"
        return f"none: {path} wants this port for its metrics (supervisor.metrics), but this process is not its daemon"
    return f"none: not one of ours (no service of {path} has port {port})"


def _port_choice(ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
    """``--port``: a number in 1-65535 or "auto"."""
    if value is None or value == "auto":
        return value
    try:
        port = int(value)
    except ValueError:
        raise click.BadParameter(f'"{value}" is neither a port number nor "auto"') from None
    if not 1 <= port <= 65535:
        raise click.BadParameter(f"port {port} is outside 1-65535")
    return port


def _env_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """``--env K=V`` (repeatable) as a dict; the value may contain "=", the name may not be empty."""
    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f'"{item}" is not NAME=VALUE')
        pairs[key.strip()] = value
    return pairs


@main.command()
@click.argument("name")
@click.option("--tier", "-t", default=None, help="Tier of the service (required when the manifest has tiers).")
@click.option("--command", "-c", "command", required=True, help="Command line (split like a shell, never run by one).")
@click.option(
    "--port",
    "-p",
    metavar="N|auto",
    callback=_port_choice,
    default=None,
    help='A port, or "auto": the lowest free one of the tier.',
)
@click.option("--depends-on", "-d", "depends_on", multiple=True, help="A service it needs (repeatable).")
@click.option("--description", default="", help="What it is, for the port guide.")
@click.option("--url", default="", help="Where people reach it ({port} allowed).")
@click.option("--kind", type=click.Choice(["service", "oneshot"]), default=None, help="A long-running service (default) or a oneshot task.")
@click.option("--env", "-e", "env", multiple=True, callback=_env_pairs, metavar="K=V", help="An environment variable (repeatable).")
@click.option("--cwd", default=None, help="Working directory (relative to the manifest's folder).")
@click.option("--ready-http", "ready_http", default=None, metavar="PATH", help="Ready once GET PATH on its port answers 2xx/3xx.")
@click.option("--group", "-g", "groups", multiple=True, help="A group it belongs to (repeatable; `svc up @GROUP`).")
@manifest_option
def add(
    name: str,
    tier: str | None,
    command: str,
    port: int | str | None,
    depends_on: tuple[str, ...],
    description: str,
    url: str,
    kind: str | None,
    env: dict[str, str],
    cwd: str | None,
    ready_http: str | None,
    groups: tuple[str, ...],
    manifest: Path | None,
) -> None:
    """Append service NAME to the manifest; its text stays as it is.

    Refuses (exit 2, file untouched) anything that would not pass svc check:
    a taken name or port, an unknown tier or dependency, a port in use.
    """
    from supervisord_lite.cli.editing import add_service, new_service_settings  # lazy: keeps svc --help fast
    from supervisord_lite.core.problems import ManifestError

    path = resolve_manifest_path(manifest)
    settings = new_service_settings(kind=kind, env=env, cwd=cwd, ready_http=ready_http, groups=groups)
    try:
        addition = add_service(
            path, name, tier=tier, command=command, port=port,  # type: ignore[arg-type]
            depends_on=depends_on, description=description, url=url, overlays=manifest_overlays(), **settings,
        )  # fmt: skip
    except ManifestError as exc:
        echo_problems(exc.problems, err=True)
        fail(f"nothing written to {path}", ExitCode.USAGE)
    port_text = f", port {addition.port}" if addition.port is not None else ""
    click.echo(f"added service {name} to {path} (tier {addition.tier}{port_text})")
    if addition.manifest.services[name].is_active and _live_snapshot(addition.manifest) is not None:
        # the daemon knows only the manifest it last loaded: `svc up NAME` alone would not find it
        click.echo(f"the daemon runs the manifest as it last loaded it: `svc reload -f {path}` starts {name}")
