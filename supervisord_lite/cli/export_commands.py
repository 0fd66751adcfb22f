"""``svc export``: write the manifest out for Docker Compose, Kubernetes or systemd.

A thin shell over ``supervisord_lite.export``: load the manifest (refusing an invalid
one with the messages of ``svc check``), render, write, say what was written.
"""

from __future__ import annotations

from pathlib import Path

import click

from supervisord_lite.cli.app import fail, load_or_fail, main, manifest_option, resolve_manifest_path
from supervisord_lite.core.exitcodes import ExitCode

TARGETS = ("compose", "kubernetes", "systemd")


@main.command("export")
@click.option("--to", "target", type=click.Choice(TARGETS), required=True, help="The engine to export for.")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write the files into (default: ./export/TARGET).",
)
@click.option(
    "--allow-missing-images",
    is_flag=True,
    help="Compose/Kubernetes: leave services without an export image out (with a comment) instead of refusing.",
)
@click.option(
    "--wait-image",
    default=None,
    metavar="IMAGE",
    help="Kubernetes: image of the init containers that wait for dependencies (needs sh and nc).",
)
@manifest_option
def export(
    target: str, output: Path | None, allow_missing_images: bool, wait_image: str | None, manifest: Path | None
) -> None:
    """Render the manifest for another engine: one service per active service, same
    ports, dependencies, probes, restart policy and stop settings.

    \b
    compose     compose.yaml (images from [services.NAME.export] or [export])
    kubernetes  a Deployment and Service per service, and kustomization.yaml
    systemd     a unit per service, a target per tier and one for the platform

    Deprecated and disabled services are left out, with a comment. An invalid
    manifest is refused (exit 2) with the messages of svc check.
    """
    from supervisord_lite.export import DEFAULT_WAIT_IMAGE, ExportError, export_manifest  # lazy: keeps svc --help fast

    loaded = load_or_fail(resolve_manifest_path(manifest))
    out_dir = output if output is not None else Path("export") / target
    try:
        result = export_manifest(
            loaded, target, out_dir,
            allow_missing_images=allow_missing_images, wait_image=wait_image or DEFAULT_WAIT_IMAGE,
        )  # fmt: skip
    except ExportError as exc:
        for problem in exc.problems:
            click.secho(str(problem), fg="red", err=True)
        if exc.hint:
            click.echo(exc.hint, err=True)
        count = len(exc.problems)
        fail(f"nothing exported to {target} ({count} problem{'s' if count != 1 else ''})", ExitCode.USAGE)
    except OSError as exc:
        fail(f"cannot write to {out_dir}: {exc.strerror or exc}", ExitCode.FAILED)
    for removed in result.removed:
        click.echo(f"removed {removed} (left from an earlier export)")
    for written in result.written:
        click.echo(f"wrote {written}")
