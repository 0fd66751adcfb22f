"""`svc signal NAME... SIG`: a signal to running services without restarting them.

nginx reloads on SIGHUP, a worker dumps its state on SIGUSR1: the daemon sends the
signal to each service's process group, and only to processes it started itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from supervisord_lite.cli.app import daemon_errors, fail, main, manifest_option, require_manifest_file, resolve_manifest_path
from supervisord_lite.cli.completion import complete_services
from supervisord_lite.core.exitcodes import ExitCode


@main.command(name="signal")
@manifest_option
@click.argument("names", nargs=-1, required=True, shell_complete=complete_services)
@click.argument("sig", metavar="SIG")
def signal_command(manifest: Path | None, names: tuple[str, ...], sig: str) -> None:
    """Send SIG (HUP, SIGUSR1, 10, ...) to each service's process group.

    NAMES: services, tiers, @groups. Exit 1 when one of them is not running (the
    others still get the signal)."""
    from supervisord_lite.cli import client  # lazy: keeps svc --help fast
    from supervisord_lite.cli.selection import select_services
    from supervisord_lite.core.values import parse_signal

    try:
        signum = parse_signal(int(sig) if sig.isdigit() else sig)
    except ValueError as exc:
        fail(f"{exc}", ExitCode.USAGE)
    path = resolve_manifest_path(manifest)
    require_manifest_file(path)
    services = select_services(path, names)
    with daemon_errors(path):
        result = client.send_signal(client.socket_for_path(path), services, signum.name)
    for entry in result["signalled"]:
        click.echo(f"sent {result['signal']} to {entry['name']} (process group {entry['pgid']})")
    if result["not_running"]:
        click.echo(f"svc: not running, so not signalled: {', '.join(result['not_running'])}", err=True)
        sys.exit(ExitCode.FAILED)
