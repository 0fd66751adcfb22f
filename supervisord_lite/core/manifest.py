"""Load and validate a manifest: TOML text -> ``model.Manifest``, every problem at once.

One pass builds the model section by section (``sections``, ``services``,
``export_section``). A bad value becomes a ``Problem`` (naming file, service and key,
with line and column when the text shows them) and the default stands in, so the
cross-service ``rules`` still run and the user sees every problem in one go. Any
error ends in ``ManifestError``; nothing else escapes the loader, whatever the input.
"""

from __future__ import annotations

import os
from dataclasses import replace
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from supervisord_lite.core.export_section import export_defaults_section
from supervisord_lite.core.budget import manifest_budget
from supervisord_lite.core.interpolate import manifest_variables
from supervisord_lite.core.locate import ProblemLog, locate, problem_order
from supervisord_lite.core.model import DEFAULT_TIER, Manifest, ServiceSpec, Tier
from supervisord_lite.core.problems import ManifestError, Problem
from supervisord_lite.core.rules import apply_rules
from supervisord_lite.core.sections import supervisor_section, tiers_section
from supervisord_lite.core.overrides import local_name
from supervisord_lite.core.services import SharedValues, service_section
from supervisord_lite.core.sources import Merged, Source, merge_sources, place
from supervisord_lite.core.tables import TableReader, is_int
from supervisord_lite.core.toml_bounds import check_data_bounds
from supervisord_lite.core.toml_source import read_manifest_text, read_optional_text
from supervisord_lite.core.values import Placeholders, env_table
from supervisord_lite.core.wording import describe

TOP_LEVEL_KEYS = ("supervisor", "tiers", "env", "services", "export")
DOTENV_NAME = ".env"


def analyse(
    text: str, path: Path, overlays: Sequence[Source] = (), environ: Mapping[str, str] | None = None
) -> tuple[Manifest | None, list[Problem]]:
    """Build the manifest (``text`` of ``path``, with each overlay merged over it) and list
    every problem; the manifest is None when any is an error. ``${VAR}`` reads ``environ``
    (default: this process's environment) over the ``.env`` beside the manifest."""
    merged = merge_sources([Source(str(path), text), *overlays])
    if isinstance(merged, list):
        return None, merged
    problems = merged.problem_log()
    for where, message in check_data_bounds(merged.data):
        problems.error(where, message)
    if problems.has_errors:
        return None, problems.found()
    with manifest_budget():
        return _build(merged.data, path, problems, os.environ if environ is None else environ)


def _variables(
    problems: ProblemLog, data: dict[str, Any], base: Path, environ: Mapping[str, str]
) -> dict[str, str]:
    """What ``${VAR}`` reads: the environment over the project's .env (unless dotenv = false)."""
    sup = data.get("supervisor")
    if isinstance(sup, dict) and sup.get("dotenv") is False:
        return dict(environ)
    dotenv = base / DOTENV_NAME
    try:
        return manifest_variables(environ, read_optional_text(dotenv), "@")
    except ManifestError as exc:
        problems.items.extend(exc.problems)
    except ValueError as exc:  # "@, line N: message" from the .env parser
        head, _, message = str(exc).partition(": ")
        line = int(head.rpartition(" ")[2]) if head.startswith("@, line ") else None
        problems.items.append(Problem("error", str(dotenv), None, None, message, line))
    return dict(environ)


def _shared_values(
    problems: ProblemLog, data: dict[str, Any], variables: dict[str, str], state_dir: Path
) -> SharedValues:
    """The variables, the services' ports for ``{services.NAME.port}``, and the expanded [env]."""
    raw_services = data.get("services")
    references: dict[str, str | None] = {}
    if isinstance(raw_services, dict):
        for name, body in raw_services.items():
            port = body.get("port") if isinstance(body, dict) else None
            references[name] = str(port) if is_int(port) and 1 <= port <= 65535 else None
    subst = Placeholders(problems, {"state_dir": str(state_dir)}, variables, references)
    env = env_table(problems, ("env",), data["env"], subst.expand) if "env" in data else {}
    return SharedValues(variables, references, env)


def _build(
    data: dict[str, Any], path: Path, problems: ProblemLog, environ: Mapping[str, str]
) -> tuple[Manifest | None, list[Problem]]:
    """The manifest from the parsed document, every problem reported to ``problems``."""
    base = Path(os.path.normpath(path.absolute().parent))
    TableReader(problems, (), data, TOP_LEVEL_KEYS)
    sup = supervisor_section(problems, data.get("supervisor"), base / path.name)
    shared = _shared_values(problems, data, _variables(problems, data, base, environ), sup.state_dir)
    declared = tiers_section(problems, data.get("tiers"))
    tiers = declared if declared is not None else {DEFAULT_TIER: Tier(DEFAULT_TIER, 0)}
    export_defaults = export_defaults_section(problems, data.get("export"))

    raw_services = data.get("services", {})
    services: dict[str, ServiceSpec] = {}
    if not isinstance(raw_services, dict):
        problems.error(("services",), f"expected a table of [services.NAME] tables, got {describe(raw_services)}")
    else:
        for name, body in raw_services.items():
            if (spec := service_section(problems, name, body, declared, sup, base, export_defaults, shared)) is not None:
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


def load_manifest(path: Path, overlays: Sequence[Path] = ()) -> Manifest:
    """Read and validate the manifest file, with ``svc.local.toml`` beside it and then each
    of ``overlays`` merged over it, as the instance asked for (``core.instances``).
    :raises ManifestError: with every problem found."""
    from supervisord_lite.core.instances import apply_instance

    text, extra = read_sources(path, overlays)
    manifest, problems = analyse(text, path, extra)
    if manifest is None:
        raise ManifestError(problems)
    manifest = replace(manifest, overlays=tuple(Path(os.path.abspath(overlay)) for overlay in overlays))
    return apply_instance(manifest, os.environ)


def env_file_warnings(m: Manifest) -> list[Problem]:
    """A missing env_file is only a warning here: the file may be created before start
    (or be readable only by the user the daemon runs as)."""
    found = []
    for spec in m.services.values():
        for env_file in spec.env_files:
            try:
                if env_file.exists():
                    continue
                message = f"{env_file} does not exist (yet)"
            except OSError as exc:  # e.g. a folder this user may not enter
                message = f"{env_file} cannot be looked at: {exc.strerror or exc}"
            found.append(Problem("warning", str(m.path), spec.name, "env_file", message))
    return found


def check_manifest(
    path: Path,
    *,
    live_checks: Callable[[Manifest], list[Problem]] | None = None,
    overlays: Sequence[Path] = (),
) -> tuple[Manifest | None, list[Problem]]:
    """Everything ``svc check`` reports: errors, then warnings (missing env files, and
    whatever ``live_checks`` finds on this machine, such as ports already in use)."""
    try:
        text, extra_sources = read_sources(path, overlays)
        manifest, problems = analyse(text, path, extra_sources)
        if manifest is not None:
            from supervisord_lite.core.instances import apply_instance

            manifest = apply_instance(manifest, os.environ)
    except ManifestError as exc:
        return None, exc.problems
    if manifest is not None:
        extra = env_file_warnings(manifest)
        if live_checks is not None:
            extra += live_checks(manifest)
        merged = merge_sources([Source(str(path), text), *extra_sources])
        problems = problems + (place(extra, merged) if isinstance(merged, Merged) else locate(extra, path, text))
    return manifest, sorted(problems, key=problem_order)


def merged_sources(path: Path, overlays: Sequence[Path] = ()) -> Merged:
    """The manifest's files merged, not validated (``svc config --unresolved`` and
    ``--origin``). :raises ManifestError: a file cannot be read or parsed."""
    text, extra = read_sources(path, overlays)
    merged = merge_sources([Source(str(path), text), *extra])
    if isinstance(merged, list):
        raise ManifestError(merged)
    return merged


def source_files(m: Manifest) -> list[Path]:
    """Every file the loaded manifest was read from (some may be absent, which is a fact too):
    the main file, the svc.local.toml beside it, each -f overlay, and the .env read for
    ``${VAR}``. Not the env_files: those are read at each start, a reload changes nothing."""
    files = [m.path, m.path.with_name(local_name(m.path.name)), *m.overlays]
    if m.supervisor.dotenv:
        files.append(m.path.parent / DOTENV_NAME)
    return list(dict.fromkeys(files))


def read_sources(path: Path, overlays: Sequence[Path] = ()) -> tuple[str, list[Source]]:
    """The main manifest's text and the overlays merged over it: ``svc.local.toml`` beside
    it when there is one, then ``overlays`` in order. :raises ManifestError: one cannot be read."""
    text = read_manifest_text(path)
    local = path.with_name(local_name(path.name))
    extra = []
    if (local_text := read_optional_text(local)) is not None:
        extra.append(Source(str(local), local_text))
    extra += [Source(str(overlay), read_manifest_text(overlay)) for overlay in overlays]
    return text, extra
