"use strict";
const COLUMNS = ["Service", "State", "Port", "URL", "Uptime", "Restarts", "Health", "CPU", "Memory", ""];
const NUMERIC = new Set(["Port", "Uptime", "Restarts", "Health", "CPU", "Memory"]);
const key = (c) => (c || "logs").toLowerCase();
let view = JSON.parse(document.getElementById("initial-view").textContent);
let offset = 0;            // server clock minus ours, in seconds
let layoutKey = "";
const rows = new Map();    // service name -> {tr, cells, logRow, pre, open}

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
  let link;  // one line, cut with an ellipsis: the whole URL is in the tooltip
  if (s.url && webUrl(s.url) && !deprecated) {
    link = el("a", "url", s.url);
    link.href = s.url; link.target = "_blank"; link.rel = "noopener noreferrer";
  } else link = el("span", "url", s.url || "-");
  if (s.url) link.title = s.url;
  c.URL.append(link);
  const running = s.pid && s.started_at;
  c.Uptime.textContent = running ? duration(now - s.started_at) : "-";
  c.Restarts.textContent = s.restarts;
  c.Health.textContent = s.port === null || s.port_up === null ? "-" :
    s.port_up ? "up" + (s.probe_latency !== null ? " " + (s.probe_latency * 1000).toFixed(1) + " ms" : "") : "down";
  const percent = (view.cpu || {})[s.name];  // the daemon's figure, there from the first paint
  c.CPU.textContent = running && percent !== undefined ? percent.toFixed(1) + "%" : "-";
  c.Memory.textContent = running ? bytes(s.rss_bytes) : "-";
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
