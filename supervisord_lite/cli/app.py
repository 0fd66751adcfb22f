"""The ``svc`` command: the click group and what every subcommand shares.

Subcommands live in ``cli_manifest`` (work without a daemon: check, config, ports,
who, add) and ``cli_daemon`` (talk to the daemon: up, down, status, ...). Heavy
modules (anyio, the supervisor) are imported inside the commands that need them,
so ``svc status`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3

F = TypeVar("F", bound=Callable[..., Any])


def _manifest_flag(*names: str) -> Callable[[F], F]:
    return click.option(
        *names,
        "manifest",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Manifest file (default: $SVC_MANIFEST, else ./svc.toml).",
    )


def manifest_option(func: F) -> F:
    """Add ``-f/--manifest`` to a subcommand (it may also be given before it)."""
    return _manifest_flag("-f", "--manifest")(func)


def long_manifest_option(func: F) -> F:
    """``--manifest`` only, for commands whose ``-f`` means something else (logs -f)."""
    return _manifest_flag("--manifest")(func)


def resolve_manifest_path(explicit: Path | None) -> Path:
    """-f wins, then the group's -f, then $SVC_MANIFEST, then ./svc.toml."""
    if explicit is not None:
        return explicit
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.obj and ctx.obj.get("manifest"):
            return Path(ctx.obj["manifest"])
        ctx = ctx.parent
    env = os.environ.get("SVC_MANIFEST")
    if env:
        return Path(env)
    return Path("svc.toml")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"svc: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@_manifest_flag("-f", "--manifest")
@click.version_option(package_name="supervisord-lite")
@click.pass_context
def main(ctx: click.Context, manifest: Path | None) -> None:
    """Run a many-service platform from one TOML manifest."""
    ctx.ensure_object(dict)
    ctx.obj["manifest"] = manifest
