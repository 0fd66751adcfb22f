"""Load and validate a manifest: TOML text -> ``model.Manifest``, every problem at once.

One pass builds the model section by section (``sections``, ``services``,
``export_section``). A bad value becomes a ``Problem`` (naming file, service and key,
with line and column when the text shows them) and the default stands in, so the
cross-service ``rules`` still run and the user sees every problem in one go. Any
error ends in ``ManifestError``; nothing else escapes the loader, whatever the input.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from supervisord_lite.core.export_section import export_defaults_section
from supervisord_lite.core.budget import manifest_budget
from supervisord_lite.core.locate import KeyLocator, ProblemLog, locate, problem_order
from supervisord_lite.core.model import DEFAULT_TIER, Manifest, ServiceSpec, Tier
from supervisord_lite.core.problems import ManifestError, Problem
from supervisord_lite.core.rules import apply_rules
from supervisord_lite.core.sections import supervisor_section, tiers_section
from supervisord_lite.core.services import service_section
from supervisord_lite.core.tables import TableReader
from supervisord_lite.core.toml_bounds import check_data_bounds
from supervisord_lite.core.toml_source import parse_toml, read_manifest_text
from supervisord_lite.core.wording import describe

TOP_LEVEL_KEYS = ("supervisor", "tiers", "services", "export")


def analyse(text: str, path: Path) -> tuple[Manifest | None, list[Problem]]:
    """Build the manifest and list every problem; the manifest is None when any is an error."""
    file = str(path)
    data = parse_toml(text, file)
    if isinstance(data, Problem):
        return None, [data]
    problems = ProblemLog(file, KeyLocator(text))
    for where, message in check_data_bounds(data):
        problems.error(where, message)
    if problems.has_errors:
        return None, problems.found()
    with manifest_budget():
        return _build(data, path, problems)


def _build(data: dict[str, Any], path: Path, problems: ProblemLog) -> tuple[Manifest | None, list[Problem]]:
    """The manifest from the parsed document, every problem reported to ``problems``."""
    base = Path(os.path.normpath(path.absolute().parent))
    TableReader(problems, (), data, TOP_LEVEL_KEYS)
    sup = supervisor_section(problems, data.get("supervisor"), base / path.name)
    declared = tiers_section(problems, data.get("tiers"))
    tiers = declared if declared is not None else {DEFAULT_TIER: Tier(DEFAULT_TIER, 0)}
    export_defaults = export_defaults_section(problems, data.get("export"))

    raw_services = data.get("services", {})
    services: dict[str, ServiceSpec] = {}
    if not isinstance(raw_services, dict):
        problems.error(("services",), f"expected a table of [services.NAME] tables, got {describe(raw_services)}")
    else:
        for name, body in raw_services.items():
            if (spec := service_section(problems, name, body, declared, sup, base, export_defaults)) is not None:
                services[name] = spec
        if not raw_services:
            problems.warning(("services",), "no services: add [services.NAME] tables (or use svc add)")
    apply_rules(problems, services, tiers, sup)

    found = problems.found()
    if problems.has_errors:
        return None, found
    manifest = Manifest(
        path=base / path.name,
        supervisor=sup,
        tiers=MappingProxyType(tiers),
        services=MappingProxyType(services),
    )
    return manifest, found


def parse_manifest(text: str, path: Path) -> Manifest:
    """The manifest in ``text``; ``path`` names it in messages and anchors relative paths.

    :raises ManifestError: with every problem found.
    """
    manifest, problems = analyse(text, path)
    if manifest is None:
        raise ManifestError(problems)
    return manifest


def load_manifest(path: Path) -> Manifest:
    """Read and validate the manifest file, as the instance asked for (``core.instances``).
    :raises ManifestError: with every problem found."""
    from supervisord_lite.core.instances import apply_instance

    return apply_instance(parse_manifest(read_manifest_text(path), path), os.environ)


def env_file_warnings(m: Manifest) -> list[Problem]:
    """A missing env_file is only a warning here: the file may be created before start
    (or be readable only by the user the daemon runs as)."""
    found = []
    for spec in m.services.values():
        if spec.env_file is None:
            continue
        try:
            if spec.env_file.exists():
                continue
            message = f"{spec.env_file} does not exist (yet)"
        except OSError as exc:  # e.g. a folder this user may not enter
            message = f"{spec.env_file} cannot be looked at: {exc.strerror or exc}"
        found.append(Problem("warning", str(m.path), spec.name, "env_file", message))
    return found


def check_manifest(
    path: Path, *, live_checks: Callable[[Manifest], list[Problem]] | None = None
) -> tuple[Manifest | None, list[Problem]]:
    """Everything ``svc check`` reports: errors, then warnings (missing env files, and
    whatever ``live_checks`` finds on this machine, such as ports already in use)."""
    try:
        text = read_manifest_text(path)
        manifest, problems = analyse(text, path)
        if manifest is not None:
            from supervisord_lite.core.instances import apply_instance

            manifest = apply_instance(manifest, os.environ)
    except ManifestError as exc:
        return None, exc.problems
    if manifest is not None:
        extra = env_file_warnings(manifest)
        if live_checks is not None:
            extra += live_checks(manifest)
        problems = problems + locate(extra, path, text)
    return manifest, sorted(problems, key=problem_order)
