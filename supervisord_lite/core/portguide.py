"""``svc ports``: the port allocation guide, generated from the manifest.

``build_guide`` gathers the data once (manifest plus, when a daemon answers, its
live states); ``render_markdown`` and ``render_json`` only format it, so both
formats always say the same thing. Pure: no I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from supervisord_lite.core.model import Manifest, ServiceSpec, Status, Tier
from supervisord_lite.core.snapshot import ServiceSnapshot
from supervisord_lite.core.states import ServiceState

MANIFEST_STATUS = {
    Status.ACTIVE: "✅ Active",
    Status.DISABLED: "⏸ Disabled",
    Status.DEPRECATED: "❌ Deprecated",
}

LIVE_STATUS = {
    ServiceState.READY: "✅ Ready",
    ServiceState.EXITED: "✅ Done",
    ServiceState.STARTING: "⏳ Starting",
    ServiceState.WAITING: "⏳ Waiting",
    ServiceState.BACKOFF: "🔁 Restarting",
    ServiceState.UNHEALTHY: "⚠️ Unhealthy",
    ServiceState.STOPPING: "⏹ Stopping",
    ServiceState.STOPPED: "⏹ Stopped",
    ServiceState.FAILED: "❌ Failed",
    ServiceState.CONFLICT: "⚠️ Conflict",
    ServiceState.DISABLED: "⏸ Disabled",
    ServiceState.DEPRECATED: "❌ Deprecated",
}


def tier_title(tier: Tier) -> str:
    return tier.description or tier.name.replace("-", " ").replace("_", " ").title()


def _status_text(spec: ServiceSpec, snap: ServiceSnapshot | None) -> str:
    if snap is None or not spec.is_active:
        return MANIFEST_STATUS[spec.status]
    text = LIVE_STATUS.get(snap.state, snap.state.value)
    if snap.state is ServiceState.CONFLICT and snap.conflict_pid is not None:
        text += f": pid {snap.conflict_pid}" + (f" ({snap.conflict_cmdline})" if snap.conflict_cmdline else "")
    elif snap.state is ServiceState.WAITING and snap.blocked_by:
        text += f" for {', '.join(snap.blocked_by)}"
    elif snap.state is ServiceState.FAILED and snap.reason:
        text += f": {snap.reason}"
    return text


def _row(m: Manifest, spec: ServiceSpec, snap: ServiceSnapshot | None) -> dict[str, Any]:
    replacement = m.services.get(spec.replaced_by) if spec.replaced_by else None
    return {
        "port": spec.port,
        "service": spec.name,
        "title": spec.title,
        "url": spec.url,
        "description": spec.description,
        "status": spec.status.value,
        "state": snap.state.value if snap is not None else None,
        "status_text": _status_text(spec, snap),
        "pid": snap.pid if snap is not None else None,
        "replaced_by": spec.replaced_by,
        "replaced_by_port": replacement.port if replacement else None,
    }


def build_guide(
    m: Manifest, live: Mapping[str, ServiceSnapshot] | None = None, *, source: str | None = None
) -> dict[str, Any]:
    """The guide's data: per tier (in start order) the services with a port, sorted by
    port, and the tiers' reserved ranges. ``live``: the daemon's snapshots by name;
    ``source``: how to name the manifest (default: its absolute path)."""
    tiers = []
    for tier in m.tiers.values():
        specs = sorted(
            (s for s in m.services.values() if s.tier == tier.name and s.port is not None),
            key=lambda s: s.port or 0,
        )
        tiers.append(
            {
                "name": tier.name,
                "order": tier.order,
                "title": tier_title(tier),
                "ranges": [str(r) for r in tier.ports],
                "services": [_row(m, s, live.get(s.name) if live else None) for s in specs],
            }
        )
    ranges = sorted(((r, t) for t in m.tiers.values() for r in t.ports), key=lambda pair: pair[0].start)
    return {
        "name": m.supervisor.name,
        "manifest": source or str(m.path),
        "live": live is not None,
        "tiers": tiers,
        "reservations": [{"range": str(r), "tier": t.name, "title": tier_title(t)} for r, t in ranges],
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _strike(text: str) -> str:
    return f"~~{text}~~" if text else ""


def _markdown_row(row: dict[str, Any]) -> str:
    name = f"`{row['service']}`"
    service = f"{row['title']} ({name})" if row["title"] and row["title"] != row["service"] else name
    url, description = row["url"], row["description"]
    if row["status"] == Status.DEPRECATED.value:
        url, description = _strike(url), _strike(description)
        if row["replaced_by"]:
            port = f" (port {row['replaced_by_port']})" if row["replaced_by_port"] else ""
            description = f"{description} → replaced by {row['replaced_by']}{port}".strip()
    cells = [str(row["port"]), service, url, description, row["status_text"]]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def render_markdown(guide: dict[str, Any]) -> str:
    """The guide as markdown, in the shape of the hand-written one it replaces."""
    lines = [
        f"# {guide['name']} - Port Allocation Guide",
        "",
        f"Generated by `svc ports` from `{guide['manifest']}`"
        + (" with the daemon's live state" if guide["live"] else "")
        + ". Edit the manifest, not this page.",
        "",
        "## Current Port Assignments",
    ]
    for tier in guide["tiers"]:
        if not tier["services"]:
            continue
        lines += [
            "",
            f"### {tier['title']}",
            "",
            "| Port | Service | URL | Description | Status |",
            "|------|---------|-----|-------------|--------|",
        ]
        lines += [_markdown_row(row) for row in tier["services"]]
    if guide["reservations"]:
        lines += ["", "## Port Range Reservations", ""]
        lines += [f"- **{r['range']}**: {r['title']} (tier `{r['tier']}`)" for r in guide["reservations"]]
    return "\n".join(lines) + "\n"


def render_json(guide: dict[str, Any]) -> str:
    return json.dumps(guide, indent=2, ensure_ascii=False) + "\n"
