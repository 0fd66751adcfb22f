"""``svc add``: append one service table to a manifest, every existing byte kept.

``plan_addition`` is pure: it takes the manifest text and the ports in use and
returns the text to append, after validating the whole result like ``svc check``.
``add_service`` is the I/O edge: it reads the file, asks the kernel which ports
are taken, and writes the file atomically only when everything is valid.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

import tomli_w

from supervisord_lite.core.locate import KeyPath
from supervisord_lite.core.manifest import analyse, parse_manifest, read_sources
from supervisord_lite.core.model import DEFAULT_TIER, Manifest
from supervisord_lite.core.problems import ManifestError, Problem
from supervisord_lite.core.sources import Merged, Source, merge_sources
from supervisord_lite.core.wording import one_line
from supervisord_lite.host import portinfo

PortChoice = int | Literal["auto"] | None


class TableSettings(TypedDict, total=False):
    """The optional keys of a new service table beyond tier, port, command, depends_on,
    description and url (``svc add --kind --env --cwd --ready-http --group``)."""

    kind: str
    env: Mapping[str, str]
    cwd: str
    ready_http: str
    groups: Sequence[str]


def new_service_settings(
    *,
    kind: str | None,
    env: Mapping[str, str],
    cwd: str | None,
    ready_http: str | None,
    groups: Sequence[str],
) -> TableSettings:
    """The settings given on the command line (None and empty ones left out)."""
    settings = TableSettings()
    if kind is not None:
        settings["kind"] = kind
    if env:
        settings["env"] = dict(env)
    if cwd is not None:
        settings["cwd"] = cwd
    if ready_http is not None:
        settings["ready_http"] = ready_http
    if groups:
        settings["groups"] = tuple(groups)
    return settings


@dataclass(frozen=True, slots=True)
class Addition:
    name: str
    tier: str
    port: int | None
    appended: str  # the exact text appended to the file
    manifest: Manifest  # the manifest as it is with the addition


def _refuse(path: Path, name: str | None, key: str | None, message: str) -> ManifestError:
    return ManifestError([Problem("error", str(path), name, key, message)])


def free_port_in_tier(m: Manifest, tier: str, busy: Collection[int], reserved: Collection[int] = ()) -> int | None:
    """The lowest port of the tier's ranges that no service reserves (deprecated ones
    included; ``reserved``: ports other versions of the manifest declare) and nothing
    listens on; None when the ranges are full."""
    reserved = {s.port for s in m.services.values() if s.port is not None} | set(reserved)
    for port_range in m.tiers[tier].ports:
        for port in range(port_range.start, port_range.end + 1):
            if port not in reserved and port not in busy:
                return port
    return None


def service_table(
    *,
    tier: str | None,
    command: str,
    port: int | None,
    depends_on: Sequence[str] = (),
    description: str = "",
    url: str = "",
    kind: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    ready_http: str | None = None,
    groups: Sequence[str] = (),
) -> dict[str, Any]:
    """The new table, with only the keys given (the loader fills in the defaults)."""
    table: dict[str, Any] = {}
    if tier is not None:
        table["tier"] = tier
    if port is not None:
        table["port"] = port
    table["command"] = command
    if kind is not None:
        table["kind"] = kind
    if description:
        table["description"] = description
    if url:
        table["url"] = url
    if groups:
        table["groups"] = list(dict.fromkeys(groups))
    if depends_on:
        table["depends_on"] = list(depends_on)
    if cwd is not None:
        table["cwd"] = cwd
    if ready_http is not None:
        table["ready"] = {"http": ready_http}
    if env:
        table["env"] = dict(env)
    return table


def _separator(text: str, newline: str) -> str:
    if not text or text.endswith(newline * 2):
        return ""
    return newline if text.endswith(newline) else newline * 2


def plan_addition(
    text: str,
    path: Path,
    name: str,
    *,
    tier: str | None,
    command: str,
    port: PortChoice = None,
    depends_on: Sequence[str] = (),
    description: str = "",
    url: str = "",
    busy: Collection[int] = frozenset(),
    overlays: Sequence[Source] = (),
    **settings: Unpack[TableSettings],
) -> Addition:
    """Validate adding service ``name`` to the manifest ``text``; return what to append.

    ``port="auto"`` picks ``free_port_in_tier``, free of every port the file declares
    alone and merged with ``overlays`` (svc.local.toml, -f files: one may move a port
    the file still names); ``busy`` are the ports something listens on now;
    ``settings`` are the other keys ``service_table`` takes (kind, env, cwd,
    ready_http, groups). The result must pass validation alone and merged.

    :raises ManifestError: the manifest is invalid already, the name or port is taken,
        no port is free, or the result would not pass validation.
    """
    alone = parse_manifest(text, path)
    current = _merged(text, path, overlays) if overlays else alone
    if name in alone.services:
        raise _refuse(path, name, None, f'a service named "{name}" already exists')
    if name in current.services:
        brought_by = _file_that_brings(("services", name), text, path, overlays)
        raise _refuse(path, name, None, f'a service named "{name}" already exists (defined in {brought_by})')
    chosen: int | None
    if port == "auto":
        tier_name = tier if tier is not None else DEFAULT_TIER
        if tier_name not in current.tiers:
            known = ", ".join(current.tiers)
            raise _refuse(path, name, "tier", f'unknown tier "{tier_name}" (tiers: {known})')
        if not current.tiers[tier_name].ports:
            raise _refuse(path, name, "port", f'tier "{tier_name}" reserves no port range; give --port N')
        declared_alone = {s.port for s in alone.services.values() if s.port is not None}
        chosen = free_port_in_tier(current, tier_name, busy, declared_alone)
        if chosen is None:
            ranges = ", ".join(str(r) for r in current.tiers[tier_name].ports)
            raise _refuse(path, name, "port", f'no free port left in tier "{tier_name}" ({ranges})')
    else:
        chosen = port
    newline = "\r\n" if "\r\n" in text else "\n"
    table = service_table(
        tier=tier, command=command, port=chosen, depends_on=depends_on, description=description, url=url,
        **settings,
    )  # fmt: skip
    rendered = tomli_w.dumps({"services": {name: table}})
    appended = _separator(text, newline) + rendered.replace("\n", newline)
    try:
        result = parse_manifest(text + appended, path)
        if overlays:
            result = _merged(text + appended, path, overlays)
    except ManifestError as exc:
        raise ManifestError(_unlocated_past(exc.problems, text.count("\n") + 1, str(path))) from None
    spec = result.services[name]
    return Addition(name=name, tier=spec.tier, port=spec.port, appended=appended, manifest=result)


def _file_that_brings(key: KeyPath, text: str, path: Path, overlays: Sequence[Source]) -> str:
    """The file that brought ``key`` into the merge of the manifest and ``overlays`` (the
    one that introduced its table, not one that only sets a value in it)."""
    merged = merge_sources([Source(str(path), text), *overlays])
    return merged.origins.file_of(key) if isinstance(merged, Merged) else "a file merged over it"


def _merged(text: str, path: Path, overlays: Sequence[Source]) -> Manifest:
    manifest, problems = analyse(text, path, overlays)
    if manifest is None:
        raise ManifestError(problems)
    return manifest


def _unlocated_past(problems: Sequence[Problem], last_line: int, file: str) -> list[Problem]:
    """Problems of the refused addition without line numbers past the file's end:
    nothing was written, so ``svc.toml:212`` would point at a line that is not there."""
    return [
        replace(p, line=None, col=None) if p.line is not None and p.line > last_line and p.file == file else p
        for p in problems
    ]


def add_service(
    path: Path,
    name: str,
    *,
    tier: str | None,
    command: str,
    port: PortChoice = None,
    depends_on: Sequence[str] = (),
    description: str = "",
    url: str = "",
    overlays: Sequence[Path] = (),
    **settings: Unpack[TableSettings],
) -> Addition:
    """Append the service to the manifest file, or raise ``ManifestError`` and touch nothing.

    The file is read with what is merged over it (its svc.local.toml, then ``overlays``).
    An explicit port that some process already listens on is refused too, naming it.
    """
    text, merged_over = read_sources(path, overlays)
    busy = portinfo.listening_ports()
    addition = plan_addition(
        text, path, name, tier=tier, command=command, port=port,
        depends_on=depends_on, description=description, url=url, busy=busy, overlays=merged_over, **settings,
    )  # fmt: skip
    if isinstance(port, int) and port in busy:
        listener = portinfo.listener_on(port)
        holder = one_line(listener.describe()) if listener else "another process"
        raise _refuse(path, name, "port", f"port {port} is in use by {holder}; stop it first or choose another port")
    _append_atomically(path, text.encode("utf-8"), addition.appended.encode("utf-8"))
    return addition


def _append_atomically(path: Path, original: bytes, suffix: bytes) -> None:
    """Write original + suffix through a temporary file and a rename, refusing when
    the file changed since it was read (someone else is editing it)."""
    target = path.resolve()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(original + suffix)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, target.stat().st_mode & 0o7777)
        if target.read_bytes() != original:
            raise _refuse(path, None, None, "the file changed while the service was being added; try again")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
