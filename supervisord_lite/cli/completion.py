"""`svc completion bash|zsh|fish`, and the completion of service, tier and group names.

The script is click's own (it calls ``svc`` back with ``_SVC_COMPLETE`` set); the names
come from the manifest the usual lookup finds (``-f``, ``$SVC_MANIFEST``, ``svc.toml``
here or above). They are read from the raw TOML, not the validating loader: completion
must be fast, keep working while the file has mistakes, and never print an error into
someone's command line, so any failure completes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from supervisord_lite.cli.app import find_manifest_path, main

SHELLS = ("bash", "zsh", "fish")


def complete_services(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Services, tiers and @groups of the manifest that start with ``incomplete``."""
    try:
        path = find_manifest_path(_manifest_flag(ctx))
        if path is None:
            return []
        from supervisord_lite.core.manifest import merged_sources  # lazy: only completing needs it

        items = selector_items(merged_sources(path).data)  # with svc.local.toml, as every command
    except Exception:  # noqa: BLE001 - completion never fails out loud
        return []
    return [item for item in items if item.value.startswith(incomplete)]


def _manifest_flag(ctx: click.Context | None) -> Path | None:
    """The -f/--manifest given to the command or to ``svc`` before it."""
    while ctx is not None:
        value = ctx.params.get("manifest")
        if value:
            return Path(value[0] if isinstance(value, (tuple, list)) else value)
        ctx = ctx.parent
    return None


def selector_items(data: dict[str, Any]) -> list[CompletionItem]:
    """What a selector word can be in this manifest data: a service, a tier, an @group; a
    name that is both a service and a tier (one that holds more than that service) is
    offered as ``service:NAME`` and ``tier:NAME``, the spellings ``svc`` takes for it."""
    services = data.get("services") if isinstance(data.get("services"), dict) else {}
    tiers = data.get("tiers") if isinstance(data.get("tiers"), dict) else {}
    members: dict[str, set[str]] = {}
    for name, table in services.items():
        tier = table.get("tier") if isinstance(table, dict) else None
        if isinstance(tier, str):
            members.setdefault(tier, set()).add(name)
    ambiguous = {name for name in services if name in tiers and not members.get(name, set()) <= {name}}
    groups: dict[str, None] = {}
    items: list[CompletionItem] = []
    for name, table in services.items():
        table = table if isinstance(table, dict) else {}
        listed = table.get("groups")
        if isinstance(listed, list):
            groups.update((g, None) for g in listed if isinstance(g, str))
        description = table.get("description")
        helptext = description if isinstance(description, str) and description else "service"
        items.append(CompletionItem(f"service:{name}" if name in ambiguous else name, help=helptext))
    for name in tiers:
        if name not in services:
            items.append(CompletionItem(name, help="tier"))
        elif name in ambiguous:
            items.append(CompletionItem(f"tier:{name}", help="tier"))
    items.extend(CompletionItem(f"@{group}", help="group") for group in groups)
    return items


@main.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (see the README to install it).

    It completes commands, options, and the service, tier and group names of the
    manifest found from the current folder."""
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    assert completer is not None  # every name in SHELLS is one click knows
    click.echo(completer(main, {}, "svc", "_SVC_COMPLETE").source())
