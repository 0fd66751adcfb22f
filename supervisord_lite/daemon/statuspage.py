"""The read-only status page the daemon serves beside /metrics.

Routes (see ``routes``):

- ``/`` and ``/status``: one self-contained HTML page (no CDN, works offline,
  readable on a phone). Its HTML, CSS and JavaScript live in ``assets/`` as package
  data; the style and script are inlined into the page at its first request. Services grouped by tier as in the port
  allocation guide, each with its clickable URL, state, port, uptime, restarts,
  health, CPU and memory, and its last log lines on demand.
- ``/api/status``: the daemon's snapshot, the same JSON as ``svc status --json``.
- ``/api/view``: that snapshot plus the manifest's layout (tiers in start order,
  titles, deprecated services and their replacements) and each service's CPU
  percent: what the page draws. The CPU figure is there from the first response
  (the average since the service started, until a second sample a second later).
- ``/api/events``: server-sent events, one ``/api/view`` document whenever a
  state changes (and every few seconds for uptime, CPU and memory).
- ``/api/logs/NAME?n=50``: the service's last log lines as JSON, only when the
  manifest says ``[supervisor] http_logs = true`` (any local user can reach the
  port, and service output can hold secrets); otherwise a 403 saying how to turn it on.

Nothing on the page acts on the daemon; the HTTP server only answers GET/HEAD and,
bound to loopback, only to loopback Host names. The page's own script and style
are pinned by hash in a Content-Security-Policy, and every value from the manifest
or the services is inserted as text, never as HTML.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Any
from urllib.parse import unquote

from supervisord_lite.daemon.httpserver import Handler, Request, Response
from supervisord_lite.core.cpurate import CpuTracker
from supervisord_lite.core.model import Manifest
from supervisord_lite.core.snapshot import SupervisorSnapshot

GetSnapshot = Callable[[], SupervisorSnapshot]
GetManifest = Callable[[], Manifest]
Tail = Callable[[str, int], list[str]]

#: How often an event stream looks for a change, and the longest it stays silent.
POLL_SECONDS = 0.25
REFRESH_SECONDS = 2.0
#: Fields that change at every sample; a change of these alone waits for the refresh.
VOLATILE = ("rss_bytes", "cpu_seconds", "probe_latency")
LOG_LINES_DEFAULT, LOG_LINES_MAX = 50, 1000
LOGS_PREFIX = "/api/logs/"


# ----------------------------------------------------------------------------- data


def build_view(
    snapshot: SupervisorSnapshot, manifest: Manifest, now: float, cpu: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """What the page draws: the snapshot (as ``svc status --json``) plus the layout,
    and each running service's CPU in percent of one core (``cpu``, from a CpuTracker).

    Tiers come in start order, services inside a tier by port as in the port
    allocation guide (services without a port last). A service the snapshot has
    but the manifest does not (a reload in between) lands in an extra group.
    """
    by_tier: dict[str, list[tuple[int, str]]] = {name: [] for name in manifest.tiers}
    extras: dict[str, dict[str, Any]] = {}
    orphans: list[str] = []
    for s in snapshot.services:
        spec = manifest.services.get(s.name)
        if spec is None or spec.tier not in by_tier:
            orphans.append(s.name)
            continue
        by_tier[spec.tier].append((spec.port if spec.port is not None else 1 << 20, s.name))
        replacement = manifest.services.get(spec.replaced_by) if spec.replaced_by else None
        extras[s.name] = {
            "title": spec.title,
            "status": spec.status.value,
            "kind": spec.kind.value,
            "depends_on": list(spec.depends_on),
            "replaced_by": spec.replaced_by,
            "replaced_by_port": replacement.port if replacement else None,
            "replaced_by_url": replacement.url if replacement else "",
        }
    tiers = []
    for tier in sorted(manifest.tiers.values(), key=lambda t: (t.order, t.name)):
        names = [name for _, name in sorted(by_tier[tier.name])]
        if not names:
            continue
        tiers.append(
            {
                "name": tier.name,
                "title": tier.description or tier.name.replace("-", " ").replace("_", " ").title(),
                "order": tier.order,
                "ranges": [str(r) for r in tier.ports],
                "services": names,
            }
        )
    if orphans:
        tiers.append({"name": "", "title": "Not in the manifest any more", "order": 1 << 20, "ranges": [], "services": orphans})
    cpu_percent = {name: round(value, 1) for name, value in (cpu or {}).items()}
    return {"now": now, "status": snapshot.to_dict(), "tiers": tiers, "services": extras, "cpu": cpu_percent}


def _stable_key(view: dict[str, Any]) -> str:
    """The view without its clock and per-sample numbers: equal keys, nothing new to show."""
    status = dict(view["status"])
    status["services"] = [{k: v for k, v in s.items() if k not in VOLATILE} for s in status["services"]]
    return json.dumps([status, view["tiers"], view["services"]], sort_keys=True, default=str)


def _script_json(data: Any) -> str:
    """JSON safe inside a <script type="application/json"> block."""
    return json.dumps(data, default=str).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# ----------------------------------------------------------------------------- routes


def routes(*, get_snapshot: GetSnapshot, get_manifest: GetManifest, tail: Tail) -> dict[str, Handler]:
    """The status page's routes for ``MetricsServer(extra_routes=...)``.

    ``get_snapshot()`` returns the live snapshot (with rss/cpu), ``get_manifest()``
    the manifest in force, ``tail(name, n)`` a service's last log lines. All three
    are called from the HTTP server's threads.
    """

    cpu = CpuTracker()
    cpu_lock = threading.Lock()

    def view() -> dict[str, Any]:
        snapshot, now = get_snapshot(), time.time()
        with cpu_lock:  # every request and event stream feeds it: the page's first paint has figures
            percent = dict(cpu.update(snapshot, now))
        return build_view(snapshot, get_manifest(), now, percent)

    def page(request: Request) -> Response:
        from html import escape  # its entity tables are ~0.8 MB: loaded when the page is first asked for

        current = view()
        fills = {"TITLE": escape(f"{current['status']['name']} · svc status"), "VIEW": _script_json(current)}
        template, csp = page_and_csp()
        text = re.sub(r"\{\{(TITLE|VIEW)\}\}", lambda m: fills[m.group(1)], template)  # one pass: no re-expansion
        return Response(
            body=text.encode(),
            content_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": csp, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    def api_status(request: Request) -> Response:
        return Response.json(get_snapshot().to_dict())

    def api_view(request: Request) -> Response:
        return Response.json(view())

    feed = ViewFeed(view)

    def api_logs(request: Request) -> Response:
        manifest = get_manifest()
        if not manifest.supervisor.http_logs:
            return Response.json({"error": logs_off_message(manifest)}, 403)
        name = unquote(request.path[len(LOGS_PREFIX) :])
        if name not in manifest.services:
            return Response.json({"error": f"no service named {name!r} in the manifest"}, 404)
        n = _int_arg(request, "n", LOG_LINES_DEFAULT)
        return Response.json({"service": name, "lines": tail(name, max(1, min(n, LOG_LINES_MAX)))})

    def api_events(request: Request) -> Response:
        return Response(body=_event_stream(feed, request), content_type="text/event-stream; charset=utf-8")

    return {
        "/": page,
        "/status": page,
        "/api/status": api_status,
        "/api/view": api_view,
        "/api/events": api_events,
        LOGS_PREFIX: api_logs,
    }


def _int_arg(request: Request, key: str, default: int) -> int:
    values = request.query.get(key)
    try:
        return int(values[0]) if values else default
    except ValueError:
        return default


def logs_off_message(manifest: Manifest) -> str:
    return (
        "service output is not served over HTTP: every local user can reach this port. "
        f"To serve it, set http_logs = true under [supervisor] in {manifest.path} and restart the daemon; "
        "`svc logs NAME` works either way"
    )


class ViewFeed:
    """The view every event stream sends, built at most once per POLL_SECONDS however
    many streams are open, so their cost does not grow with their number."""

    def __init__(self, view: Callable[[], dict[str, Any]]) -> None:
        self._view = view
        self._lock = threading.Lock()
        self._built_at = float("-inf")
        self._current: tuple[str, bytes] = ("", b"")

    def current(self) -> tuple[str, bytes]:
        """(the view's stable key, the whole view as JSON)."""
        with self._lock:
            now = time.monotonic()
            if now - self._built_at >= POLL_SECONDS:
                view = self._view()
                self._current = (_stable_key(view), json.dumps(view, default=str).encode())
                self._built_at = now
            return self._current


def _event_stream(feed: ViewFeed, request: Request) -> Iterator[bytes]:
    """One ``data:`` event per change of the view; a refresh every REFRESH_SECONDS."""
    yield b"retry: 2000\n\n"
    last_key = None
    last_sent = 0.0
    while not request.stopping.is_set() and not request.client_gone():
        key, data = feed.current()
        now = time.monotonic()
        if key != last_key or now - last_sent >= REFRESH_SECONDS:
            yield b"data: " + data + b"\n\n"
            last_key, last_sent = key, now
        request.stopping.wait(POLL_SECONDS)


# ----------------------------------------------------------------------------- the page

def _asset(name: str) -> str:
    from importlib.resources import files  # with zipfile and tempfile: loaded when the page is first asked for

    return (files("supervisord_lite.daemon") / "assets" / name).read_text(encoding="utf-8")


def _inline(name: str) -> str:
    """An asset as it sits between its tags, starting on a line of its own.

    The CSP hashes exactly this text, so the page and the header cannot disagree.
    """
    return "\n" + _asset(name)


def _sha256(text: str) -> str:
    import base64
    import hashlib

    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def page_and_csp() -> tuple[str, str]:
    """The page with its style and script in place (``{{TITLE}}`` and ``{{VIEW}}`` are
    filled per request), and its Content-Security-Policy: only our own inline script and
    style run; data goes to our own origin only. Built at the first request."""
    style, script = _inline("status.css"), _inline("status.js")
    static = {"STYLE": style, "SCRIPT": script}
    page = re.sub(r"\{\{(STYLE|SCRIPT)\}\}", lambda m: static[m.group(1)], _asset("status.html"))
    csp = (
        f"default-src 'none'; script-src {_sha256(script)}; style-src {_sha256(style)}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page, csp
