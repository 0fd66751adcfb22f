"""The read-only status page the daemon serves beside /metrics (issue 9).

Routes (see ``routes``):

- ``/`` and ``/status``: one self-contained HTML page (inline CSS and JS, no CDN,
  works offline, readable on a phone). Services grouped by tier as in the port
  allocation guide, each with its clickable URL, state, port, uptime, restarts,
  health, CPU and memory, and its last log lines on demand.
- ``/api/status``: the daemon's snapshot, the same JSON as ``svc status --json``.
- ``/api/view``: that snapshot plus the manifest's layout (tiers in start order,
  titles, deprecated services and their replacements): what the page draws.
- ``/api/events``: server-sent events, one ``/api/view`` document whenever a
  state changes (and every few seconds for uptime, CPU and memory).
- ``/api/logs/NAME?n=50``: the service's last log lines as JSON.

Nothing on the page acts on the daemon; the HTTP server only answers GET/HEAD and,
bound to loopback, only to loopback Host names. The page's own script and style
are pinned by hash in a Content-Security-Policy, and every value from the manifest
or the services is inserted as text, never as HTML.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

from supervisord_lite.daemon.httpserver import Handler, Request, Response
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


def build_view(snapshot: SupervisorSnapshot, manifest: Manifest, now: float) -> dict[str, Any]:
    """What the page draws: the snapshot (as ``svc status --json``) plus the layout.

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
    return {"now": now, "status": snapshot.to_dict(), "tiers": tiers, "services": extras}


def _stable_key(view: dict[str, Any]) -> str:
    """The view without its clock and per-sample numbers: equal keys, nothing new to show."""
    status = dict(view["status"])
    status["services"] = [{k: v for k, v in s.items() if k not in VOLATILE} for s in status["services"]]
    return json.dumps([status, view["tiers"], view["services"]], sort_keys=True, default=str)


def _script_json(data: Any) -> str:
    """JSON safe inside a <script type="application/json"> block."""
    return json.dumps(data, default=str).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


# ----------------------------------------------------------------------------- routes


def routes(*, get_snapshot: GetSnapshot, get_manifest: GetManifest, tail: Tail) -> dict[str, Handler]:
    """The status page's routes for ``MetricsServer(extra_routes=...)``.

    ``get_snapshot()`` returns the live snapshot (with rss/cpu), ``get_manifest()``
    the manifest in force, ``tail(name, n)`` a service's last log lines. All three
    are called from the HTTP server's threads.
    """

    def view() -> dict[str, Any]:
        return build_view(get_snapshot(), get_manifest(), time.time())

    def page(request: Request) -> Response:
        current = view()
        fills = {"TITLE": _escape(f"{current['status']['name']} · svc status"), "VIEW": _script_json(current)}
        html = re.sub(r"\{\{(TITLE|VIEW)\}\}", lambda m: fills[m.group(1)], PAGE)  # one pass: no re-expansion
        return Response(
            body=html.encode(),
            content_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    def api_status(request: Request) -> Response:
        return Response.json(get_snapshot().to_dict())

    def api_view(request: Request) -> Response:
        return Response.json(view())

    def api_logs(request: Request) -> Response:
        name = unquote(request.path[len(LOGS_PREFIX) :])
        if name not in get_manifest().services:
            return Response.json({"error": f"no service named {name!r} in the manifest"}, 404)
        n = _int_arg(request, "n", LOG_LINES_DEFAULT)
        return Response.json({"service": name, "lines": tail(name, max(1, min(n, LOG_LINES_MAX)))})

    def api_events(request: Request) -> Response:
        return Response(body=_event_stream(view, request), content_type="text/event-stream; charset=utf-8")

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


def _event_stream(view: Callable[[], dict[str, Any]], request: Request) -> Iterator[bytes]:
    """One ``data:`` event per change of the view; a refresh every REFRESH_SECONDS."""
    yield b"retry: 2000\n\n"
    last_key = None
    last_sent = 0.0
    while not request.stopping.is_set():
        current = view()
        key = _stable_key(current)
        now = time.monotonic()
        if key != last_key or now - last_sent >= REFRESH_SECONDS:
            yield b"data: " + json.dumps(current, default=str).encode() + b"\n\n"
            last_key, last_sent = key, now
        request.stopping.wait(POLL_SECONDS)


# ----------------------------------------------------------------------------- the page

STYLE = """
:root{--bg:#f6f7f9;--fg:#1b1f24;--muted:#5f6b7a;--card:#fff;--line:#e2e6eb;--link:#0b5cad;
--ok:#18794e;--ok-bg:#dff3e8;--warn:#8a5a00;--warn-bg:#fff1cc;--bad:#b42318;--bad-bg:#fde2df;
--idle:#5f6b7a;--idle-bg:#eceff3}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--fg:#e6e9ee;--muted:#9aa5b1;--card:#1a1f25;
--line:#2c333c;--link:#7fb6ff;--ok:#5fd49a;--ok-bg:#17382a;--warn:#f5c451;--warn-bg:#3a2f12;
--bad:#ff8a80;--bad-bg:#45201d;--idle:#9aa5b1;--idle-bg:#262c34}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{padding:14px 18px;border-bottom:1px solid var(--line);background:var(--card);position:sticky;top:0;z-index:1}
h1{font-size:1.25rem;margin:0 0 4px}
h2{font-size:1.05rem;margin:22px 0 8px}
.sub{color:var(--muted);font-size:.85rem;overflow-wrap:anywhere}
main{padding:4px 18px 24px;max-width:1400px}
a{color:var(--link)}
.counts{display:flex;flex-wrap:wrap;gap:6px;margin-top:8px}
.chip,.badge{display:inline-block;border-radius:999px;padding:1px 9px;font-size:.8rem;font-weight:600;white-space:nowrap}
.conn{margin-left:8px;font-size:.8rem;font-weight:600}
.conn.live{color:var(--ok)}.conn.down{color:var(--bad)}
.ranges{color:var(--muted);font-size:.8rem;font-weight:400;margin-left:6px}
table{width:100%;table-layout:fixed;border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:8px;overflow:hidden}
col.c-service{width:22%}col.c-state{width:13%}col.c-port{width:6.5%}col.c-url{width:16.5%}
col.c-uptime{width:7%}col.c-restarts{width:8%}col.c-health{width:8.5%}col.c-cpu{width:5.5%}col.c-memory{width:7%}col.c-logs{width:6%}
th,td{text-align:left;overflow-wrap:anywhere;padding:7px 10px;border-top:1px solid var(--line);vertical-align:top}
th{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;font-size:.72rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);border-top:0}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.name{font-weight:600}.desc{color:var(--muted);font-size:.85rem}
.detail{font-size:.82rem;color:var(--muted);overflow-wrap:anywhere}
.detail.bad{color:var(--bad)}
.url{overflow-wrap:anywhere}
.s-ready,.s-exited{color:var(--ok);background:var(--ok-bg)}
.s-starting,.s-waiting,.s-backoff,.s-stopping{color:var(--warn);background:var(--warn-bg)}
.s-unhealthy,.s-failed,.s-conflict{color:var(--bad);background:var(--bad-bg)}
.s-stopped,.s-disabled,.s-deprecated{color:var(--idle);background:var(--idle-bg)}
tr.deprecated .name,tr.deprecated .url,tr.deprecated .desc{text-decoration:line-through;opacity:.75}
.replaced{font-size:.82rem}
button.logs{font:inherit;font-size:.8rem;padding:2px 8px;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg);cursor:pointer}
tr.logrow td{background:var(--bg)}
tr.noterow td{border-top:0;padding-top:0;font-size:.85rem;color:var(--muted)}
tr.noterow td.bad{color:var(--bad)}
tr.svc.noted td{padding-bottom:3px}
pre{margin:0;max-height:320px;overflow:auto;font-size:.78rem;line-height:1.35;white-space:pre-wrap;overflow-wrap:anywhere}
body.stale main{opacity:.55}
footer{padding:0 18px 24px;color:var(--muted);font-size:.8rem}
@media (max-width:760px){
 header{position:static;padding:12px}
 main{padding:2px 8px 18px}
 table,tbody{display:block;width:100%}
 thead,colgroup{display:none}
 table{border:0;background:none}
 tr.svc{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:2px 8px;background:var(--card);
  border:1px solid var(--line);border-radius:8px;margin:0 0 8px;padding:8px 10px}
 tr.logrow{display:block;margin:-6px 0 8px}
 tr.noterow{display:block;margin:-12px 0 8px;padding:0 10px 8px;background:var(--card);border:1px solid var(--line);border-top:0;border-radius:0 0 8px 8px}
 tr.noterow td{display:block}
 tr.logrow td{display:block;border:1px solid var(--line);border-radius:0 0 8px 8px}
 td{display:block;border:0;padding:0;white-space:normal}
 td.c-state{grid-column:1/3}
 td.c-url{grid-column:1/-1}
 td.c-logs{grid-column:3;grid-row:1;justify-self:end}
 td.c-service{grid-column:1/3;grid-row:1}
 td[data-label]::before{content:attr(data-label);display:block;color:var(--muted);font-size:.68rem;text-transform:uppercase;letter-spacing:.04em}
 td.c-state::before,td.c-url::before{display:none}
}
[hidden]{display:none!important}
"""

SCRIPT = r"""
"use strict";
const COLUMNS = ["Service", "State", "Port", "URL", "Uptime", "Restarts", "Health", "CPU", "Memory", ""];
const NUMERIC = new Set(["Port", "Uptime", "Restarts", "Health", "CPU", "Memory"]);
const key = (c) => (c || "logs").toLowerCase();
let view = JSON.parse(document.getElementById("initial-view").textContent);
let offset = 0;            // server clock minus ours, in seconds
let layoutKey = "";
const rows = new Map();    // service name -> {tr, cells, logRow, pre, open}
let cpuPrev = new Map();   // service name -> [cpu_seconds, server time]
let cpuRate = new Map();

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function duration(s) {
  if (s === null || s === undefined || s < 0) return "-";
  s = Math.floor(s);
  if (s < 60) return s + "s";
  let m = Math.floor(s / 60); s %= 60;
  if (m < 60) return m + "m" + String(s).padStart(2, "0") + "s";
  let h = Math.floor(m / 60); m %= 60;
  if (h < 24) return h + "h" + String(m).padStart(2, "0") + "m";
  const d = Math.floor(h / 24); h %= 24;
  return d + "d" + String(h).padStart(2, "0") + "h";
}
function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
function webUrl(u) { return /^https?:\/\//i.test(u || ""); }
function serverNow() { return Date.now() / 1000 + offset; }

// [short detail under the state badge, is it bad, a longer note on a line of its own]
function stateDetail(s, now) {
  const retry = s.next_retry_at ? "retry in " + duration(Math.max(0, s.next_retry_at - now)) : "";
  switch (s.state) {
    case "conflict":
      return [s.conflict_pid ? "pid " + s.conflict_pid + ", not ours" : "port taken", true,
        "Port " + s.port + " is held by " + (s.conflict_pid ? "pid " + s.conflict_pid : "a process of another user") +
        ", which is not ours, so it is left alone" + (s.conflict_cmdline ? ": " + s.conflict_cmdline : ".")];
    case "waiting":
      return [s.blocked_by && s.blocked_by.length ? "for " + s.blocked_by.join(", ") : "", false,
        s.blocked_by && s.blocked_by.length && s.reason ? s.reason : ""];
    case "failed":
      return [retry, true, s.reason];
    case "backoff":
    case "unhealthy":
      return [retry || (s.pid ? "pid " + s.pid : ""), true, s.reason];
    case "ready":
    case "exited":
    case "starting":
    case "stopping":
      return [s.pid ? "pid " + s.pid : "", false, ""];
    default:
      return ["", false, ""];
  }
}

function buildLayout() {
  const main = document.getElementById("tiers");
  main.replaceChildren();
  const keep = new Map(rows);
  rows.clear();
  for (const tier of view.tiers) {
    const h = el("h2", null, tier.title);
    if (tier.ranges.length) h.append(el("span", "ranges", "ports " + tier.ranges.join(", ")));
    const section = el("section");
    section.id = "tier-" + tier.name;
    section.append(h);
    const table = el("table");
    const cols = el("colgroup");
    for (const c of COLUMNS) cols.append(el("col", "c-" + key(c)));
    table.append(cols);
    const head = el("tr");
    for (const c of COLUMNS) head.append(el("th", null, c));
    const thead = el("thead");
    thead.append(head);
    table.append(thead);
    const body = el("tbody");
    table.append(body);
    for (const name of tier.services) {
      const tr = el("tr", "svc");
      tr.id = "svc-" + name;
      tr.dataset.service = name;
      const cells = {};
      for (const c of COLUMNS) {
        const td = el("td", "c-" + key(c) + (NUMERIC.has(c) ? " num" : ""));
        if (c && c !== "Service") td.dataset.label = c;
        cells[c || "logs"] = td;
        tr.append(td);
      }
      const noteRow = el("tr", "noterow");
      noteRow.hidden = true;
      noteRow.id = "note-" + name;
      const noteCell = el("td");
      noteCell.colSpan = COLUMNS.length;
      noteRow.append(noteCell);
      const logRow = el("tr", "logrow");
      logRow.hidden = true;
      logRow.id = "logs-" + name;
      const logCell = el("td");
      logCell.colSpan = COLUMNS.length;
      const pre = el("pre", null, "loading…");
      logCell.append(pre);
      logRow.append(logCell);
      const button = el("button", "logs", "logs");
      button.type = "button";
      const entry = {tr, cells, noteRow, noteCell, logRow, pre, button, open: false, fetched: 0};
      const old = keep.get(name);
      if (old && old.open) { entry.open = true; logRow.hidden = false; pre.textContent = old.pre.textContent; }
      button.addEventListener("click", () => toggleLogs(name));
      cells.logs.append(button);
      body.append(tr, noteRow, logRow);
      rows.set(name, entry);
    }
    section.append(table);
    main.append(section);
  }
}

function fill(entry, s, extra, now) {
  const c = entry.cells;
  const deprecated = s.state === "deprecated" || extra.status === "deprecated";
  entry.tr.dataset.state = s.state;
  const title = extra.title && extra.title !== s.name ? extra.title : "";
  c.Service.replaceChildren(el("div", "name", title ? title + " (" + s.name + ")" : s.name));
  if (s.description) c.Service.append(el("div", "desc", s.description));
  if (deprecated && (s.replaced_by || extra.replaced_by)) {
    const div = el("div", "replaced", "→ replaced by ");
    const target = s.replaced_by || extra.replaced_by;
    const a = el("a", null, target + (extra.replaced_by_port ? " (port " + extra.replaced_by_port + ")" : ""));
    a.href = "#svc-" + target;
    div.append(a);
    c.Service.append(div);
  }
  const badge = el("span", "badge s-" + s.state, s.state);
  badge.dataset.role = "state";
  c.State.replaceChildren(badge);
  const [detail, bad, note] = stateDetail(s, now);
  if (detail) c.State.append(el("div", "detail" + (bad ? " bad" : ""), detail));
  entry.noteCell.textContent = note || "";
  entry.noteCell.className = bad ? "bad" : "";
  entry.noteRow.hidden = !note;
  entry.tr.className = "svc" + (deprecated ? " deprecated" : "") + (note ? " noted" : "");
  c.Port.textContent = s.port === null ? "-" : s.port;
  c.URL.replaceChildren();
  if (s.url && webUrl(s.url) && !deprecated) {
    const a = el("a", "url", s.url);
    a.href = s.url; a.target = "_blank"; a.rel = "noopener noreferrer";
    c.URL.append(a);
  } else c.URL.append(el("span", "url", s.url || "-"));
  const running = s.pid && s.started_at;
  c.Uptime.textContent = running ? duration(now - s.started_at) : "-";
  c.Restarts.textContent = s.restarts;
  c.Health.textContent = s.port === null || s.port_up === null ? "-" :
    s.port_up ? "up" + (s.probe_latency !== null ? " " + (s.probe_latency * 1000).toFixed(1) + " ms" : "") : "down";
  const rate = cpuRate.get(s.name);
  c.CPU.textContent = running && rate !== undefined ? (rate * 100).toFixed(1) + "%" : "-";
  c.Memory.textContent = running ? bytes(s.rss_bytes) : "-";
}

function trackCpu() {  // CPU % from the cumulative CPU seconds of two samples >= 1.5 s apart
  const now = view.now;
  const next = new Map();
  for (const s of view.status.services) {
    if (s.cpu_seconds === null || !s.pid) continue;
    const prev = cpuPrev.get(s.name);
    if (prev && prev.pid === s.pid && now - prev.t < 1.5) { next.set(s.name, prev); continue; }
    if (prev && prev.pid === s.pid) cpuRate.set(s.name, Math.max(0, (s.cpu_seconds - prev.cpu) / (now - prev.t)));
    else cpuRate.delete(s.name);
    next.set(s.name, {cpu: s.cpu_seconds, t: now, pid: s.pid});
  }
  cpuPrev = next;
}

function render() {
  const st = view.status;
  const key = JSON.stringify(view.tiers);
  if (key !== layoutKey) { buildLayout(); layoutKey = key; }
  const now = serverNow();
  document.getElementById("name").textContent = st.name;
  document.getElementById("meta").textContent =
    st.manifest + " · daemon pid " + st.pid + " · up " + duration(now - st.started_at);
  const counts = {};
  for (const s of st.services) counts[s.state] = (counts[s.state] || 0) + 1;
  const chips = document.getElementById("counts");
  chips.replaceChildren();
  const order = ["failed", "conflict", "unhealthy", "backoff", "starting", "waiting", "stopping", "ready", "exited", "stopped", "disabled", "deprecated"];
  for (const state of order) if (counts[state]) chips.append(el("span", "chip s-" + state, counts[state] + " " + state));
  const bad = (counts.failed || 0) + (counts.conflict || 0) + (counts.unhealthy || 0) + (counts.backoff || 0);
  document.title = (bad ? "✗ " + bad + " · " : "") + st.name + " · svc status";
  for (const s of st.services) {
    const entry = rows.get(s.name);
    if (entry) fill(entry, s, view.services[s.name] || {}, now);
  }
  for (const [name, entry] of rows) if (entry.open && Date.now() - entry.fetched > 2000) loadLogs(name);
}

function tick() {  // uptimes and retry countdowns move between updates
  const now = serverNow();
  for (const s of view.status.services) {
    const entry = rows.get(s.name);
    if (!entry) continue;
    if (s.pid && s.started_at) entry.cells.Uptime.textContent = duration(now - s.started_at);
  }
  const st = view.status;
  document.getElementById("meta").textContent =
    st.manifest + " · daemon pid " + st.pid + " · up " + duration(now - st.started_at);
}

function toggleLogs(name) {
  const entry = rows.get(name);
  entry.open = !entry.open;
  entry.logRow.hidden = !entry.open;
  entry.button.textContent = entry.open ? "hide logs" : "logs";
  if (entry.open) loadLogs(name);
}

async function loadLogs(name) {
  const entry = rows.get(name);
  entry.fetched = Date.now();
  try {
    const resp = await fetch("api/logs/" + encodeURIComponent(name) + "?n=50", {cache: "no-store"});
    const data = await resp.json();
    const lines = data.lines || [];
    entry.pre.textContent = resp.ok ? (lines.length ? lines.join("\n") : "(no output yet)") : data.error;
    entry.pre.scrollTop = entry.pre.scrollHeight;
  } catch (err) {
    entry.pre.textContent = "cannot read the logs: " + err;
  }
}

function update(next) {
  view = next;
  offset = view.now - Date.now() / 1000;
  trackCpu();
  render();
}

function connected(ok) {
  const c = document.getElementById("conn");
  c.textContent = ok ? "● live" : "● reconnecting…";
  c.className = "conn " + (ok ? "live" : "down");
  document.body.classList.toggle("stale", !ok);
}

function poll() {
  fetch("api/view", {cache: "no-store"})
    .then((r) => r.json()).then((v) => { connected(true); update(v); })
    .catch(() => connected(false))
    .finally(() => setTimeout(poll, 2000));
}

update(view);
setInterval(tick, 1000);
if (window.EventSource) {
  const events = new EventSource("api/events");
  events.onopen = () => connected(true);
  events.onmessage = (e) => { connected(true); update(JSON.parse(e.data)); };
  events.onerror = () => connected(false);
} else poll();
"""

PAGE = (
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
    '<meta name="color-scheme" content="light dark">'
    '<link rel="icon" href="data:,">'
    "<title>{{TITLE}}</title>"
    f"<style>{STYLE}</style></head>\n<body>"
    '<header><h1><span id="name"></span><span id="conn" class="conn live">● live</span></h1>'
    '<div class="sub" id="meta"></div><div class="counts" id="counts"></div></header>'
    '<main id="tiers"></main>'
    '<footer>Read-only view of the supervisor. Machine-readable: '
    '<a href="api/status">/api/status</a> (as <code>svc status --json</code>) · '
    '<a href="metrics">/metrics</a> · <a href="healthz">/healthz</a></footer>'
    '<script type="application/json" id="initial-view">{{VIEW}}</script>'
    f"<script>{SCRIPT}</script>\n</body></html>\n"
)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


#: Only our own inline script and style run; data goes to our own origin only.
CSP = (
    f"default-src 'none'; script-src {_sha256(SCRIPT)}; style-src {_sha256(STYLE)}; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
