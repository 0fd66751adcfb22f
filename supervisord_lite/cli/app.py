"""The ``svc`` command: the click group and what every subcommand shares.

Subcommands live in ``manifest_commands`` (work without a daemon: check, config,
ports, who, add), ``daemon_commands`` (talk to the daemon: up, down, status, ...)
and ``export_commands``. Every one of them is imported for ``svc --help``, so the
heavy modules (the manifest loader, the control client, rich, the exporters) are
imported inside the functions that use them; each such import says so.

What every command says the same way lives here: a failure (``fail``), a broken
manifest (``load_or_fail``, the lines of ``svc check``), no daemon (``fail_no_daemon``)
and a refusal from the daemon (``daemon_errors``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from supervisord_lite import __version__
from supervisord_lite.cli.entry import MANIFEST_NAME, current_folder, lookup_manifest
from supervisord_lite.cli.lazygroup import LazyGroup
from supervisord_lite.core.exitcodes import ExitCode
from supervisord_lite.core.protocol import ControlError, DaemonUnreachable

if TYPE_CHECKING:
    from supervisord_lite.core.problems import ManifestError, Problem
    from supervisord_lite.core.model import Manifest

F = TypeVar("F", bound=Callable[..., Any])


class _ManifestPath(click.Path):
    """A manifest file's path; an empty one (``-f ""``, an unset variable) is a usage
    error, where pathlib would quietly read it as the current folder."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("the manifest path is empty", param, ctx)
        return super().convert(value, param, ctx)


def _manifest_flag(*names: str) -> Callable[[F], F]:
    return click.option(
        *names,
        "manifest",
        type=_ManifestPath(dir_okay=False, path_type=Path),
        multiple=True,
        help="Manifest file (default: $SVC_MANIFEST, else svc.toml here or in the nearest folder above); "
        "each further one is merged over it.",
    )


ManifestFlag = Path | tuple[Path, ...] | None  # what -f gives a command: every file, the main one first


def _main_file(given: ManifestFlag) -> Path | None:
    """The main manifest of ``-f A -f B`` (A); the others are remembered as overlays."""
    if not isinstance(given, tuple):
        return given
    if not given:
        return None
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        root = ctx.find_root()
        root.ensure_object(dict)
        root.obj["overlays"] = tuple(given[1:])
    return given[0]


def manifest_overlays() -> tuple[Path, ...]:
    """The files given after the first -f (merged over it, after its svc.local.toml)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or not isinstance(ctx.find_root().obj, dict):
        return ()
    return tuple(ctx.find_root().obj.get("overlays", ()))


def manifest_option(func: F) -> F:
    """Add ``-f/--manifest`` to a subcommand (it may also be given before it)."""
    return _manifest_flag("-f", "--manifest")(func)


def long_manifest_option(func: F) -> F:
    """``--manifest`` only, for commands whose ``-f`` means something else (logs -f)."""
    return _manifest_flag("--manifest")(func)


def find_manifest_path(explicit: ManifestFlag) -> Path | None:
    """-f wins, then the group's -f, then $SVC_MANIFEST, then svc.toml in the current
    folder or the nearest folder above it (``cli.entry.lookup_manifest``); None when the
    lookup finds none."""
    if (main_file := _main_file(explicit)) is not None:
        return main_file
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.obj and ctx.obj.get("manifest"):
            return _main_file(tuple(Path(file) for file in ctx.obj["manifest"]))
        ctx = ctx.parent
    return lookup_manifest()


def resolve_manifest_path(explicit: ManifestFlag) -> Path:
    """``find_manifest_path``, or exit 2 saying where the lookup looked."""
    found = find_manifest_path(explicit)
    if found is None:
        fail(
            f"no {MANIFEST_NAME} in {current_folder() or 'the current folder'} or any folder above it "
            "(give one with -f PATH or $SVC_MANIFEST)",
            ExitCode.USAGE,
        )
    return found


def fail(message: str, code: int = ExitCode.FAILED) -> NoReturn:
    click.echo(f"svc: {message}", err=True)
    sys.exit(code)


# ----------------------------------------------------------------------------- a broken manifest


def echo_problems(problems: list[Problem], *, err: bool) -> None:
    """One problem a line (``file:line:col: error: key: message``), errors in red."""
    for problem in problems:
        click.secho(str(problem), fg="red" if problem.is_error else "yellow", err=err)


def load_or_fail(path: Path) -> Manifest:
    """The manifest at ``path``; when it is missing or invalid, its problems as ``svc check``
    prints them (on stderr) and exit 2. Every command that needs a valid manifest loads it here."""
    from supervisord_lite.core.manifest import load_manifest  # lazy: keeps svc --help fast
    from supervisord_lite.core.problems import ManifestError

    try:
        return load_manifest(path, manifest_overlays())
    except ManifestError as exc:
        from supervisord_lite.cli.render import manifest_summary_line  # lazy: only a broken manifest needs it

        echo_problems(exc.problems, err=True)
        click.echo(manifest_summary_line(path, None, exc.problems), err=True)
        sys.exit(ExitCode.USAGE)


def require_manifest_file(path: Path) -> None:
    """Exit 2 as ``load_or_fail`` does when there is no file at ``path`` (commands that reach a
    running daemon go on with a file that does not validate: the daemon keeps the last good one)."""
    if not path.exists():
        load_or_fail(path)


def warn_not_validating(path: Path, exc: ManifestError) -> None:
    click.echo(f"warning: {path} does not validate (the daemon keeps running the last good one):\n{exc}", err=True)


# ----------------------------------------------------------------------------- talking to the daemon


def fail_no_daemon(path: Path) -> NoReturn:
    """Exit 3, and say so when a daemon died leaving its services running."""
    from supervisord_lite.cli.client import leftovers_of  # lazy: it reads /proc with psutil

    message = f"no daemon is running for {path} (start one with `svc up -f {path}`)"
    left = leftovers_of(path)
    if left:
        message += (
            f"\na previous daemon died leaving {len(left)} service(s) running ({', '.join(sorted(left))}); "
            "`svc up` stops them and starts them again under a new daemon; `svc down` stops them"
        )
    fail(message, ExitCode.NO_DAEMON)


@contextmanager
def daemon_errors(path: Path, when_absent: Callable[[], NoReturn] | None = None) -> Iterator[None]:
    """Requests to the daemon of the manifest at ``path``: when none runs, ``when_absent()``
    (by default: exit 3, ``fail_no_daemon``); when it refuses, its message and exit code."""
    try:
        yield
    except DaemonUnreachable:
        if when_absent is not None:
            when_absent()
        fail_no_daemon(path)
    except ControlError as exc:
        fail(str(exc), exc.code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@_manifest_flag("-f", "--manifest")
@click.version_option(version=__version__, package_name="supervisord-lite")  # no metadata scan at start-up
@click.pass_context
def main(ctx: click.Context, manifest: tuple[Path, ...]) -> None:
    """Run a many-service platform from one TOML manifest."""
    ctx.ensure_object(dict)
    ctx.obj["manifest"] = manifest
