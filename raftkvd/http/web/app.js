// raftkv web view: polls this node's /cluster once a second and draws the cluster; the
// latest changes stream from /watch (Server-Sent Events).
// Plain JavaScript, no dependencies, no build step; nothing is loaded from elsewhere.
"use strict";

const CLUSTER_URL = "/cluster";
const REFRESH_MS = 1000;
const FETCH_TIMEOUT_MS = 4000;   // /cluster waits up to 0.5 s for a paused node, 1 s for a leader
const HISTORY = 60;              // write-rate samples kept: about a minute
const SPARK_WIDTH = 600;
const SPARK_HEIGHT = 90;
const SPARK_PAD = 4;
const NONE = "–";
const LAG_WARN = 100;            // entries behind the leader before a lag is shown as a warning

const TOKEN_KEY = "raftkv-token";
const WATCH_URL = "/watch?prefix=";     // every key, from after the current revision
const CHANGES_SHOWN = 20;
const VALUE_SHOWN = 80;                 // characters of a value shown in the changes table
const RECONNECT_MS = 1000;

const rate = { samples: [], last: null };  // last: {at: ms, commit: index}

/**
 * The bearer token for /cluster when the node has a tokens file: opened as /#token=TOKEN, the
 * page keeps it for this tab (sessionStorage) and drops it from the address bar. A fragment is
 * never sent to the server, so the token stays out of its logs and of any Referer.
 */
function takeToken() {
  const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

const token = takeToken();

function $(id) {
  return document.getElementById(id);
}

function isReachable(node) {
  return node.reachable !== false;
}

/** The node that leads in the highest term (an old leader may not know it was replaced). */
function leaderOf(nodes) {
  let best = null;
  for (const node of nodes) {
    if (isReachable(node) && node.role === "leader" && (best === null || node.term > best.term)) {
      best = node;
    }
  }
  return best;
}

function text(value) {
  return value === undefined || value === null || value === "" ? NONE : String(value);
}

function cell(tag, content, className) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (content instanceof Node) element.append(content);
  else element.textContent = text(content);
  return element;
}

function badge(label, kind) {
  const span = document.createElement("span");
  span.className = `badge badge-${kind}`;
  span.textContent = label;
  return span;
}

function nodeLabel(node) {
  const wrap = document.createElement("span");
  wrap.className = "node-name";
  wrap.append(`Node ${node.id}`);
  const where = document.createElement("span");
  where.className = "endpoint";
  where.textContent = node.http ? `http ${node.http}` : text(node.endpoint).replace(/^tcp:\/\//, "");
  wrap.append(where);
  return wrap;
}

function nodeRow(node, leader) {
  const row = document.createElement("tr");
  row.dataset.nodeId = String(node.id);
  if (!isReachable(node)) {
    row.className = "node unreachable";
    row.dataset.role = "unreachable";
    row.append(cell("th", nodeLabel(node)), cell("td", badge("unreachable", "unreachable")));
    for (let i = 0; i < 7; i++) row.append(cell("td", null, "num"));
    row.firstChild.setAttribute("scope", "row");
    return row;
  }
  const isLeader = leader !== null && node.id === leader.id;
  row.className = isLeader ? "node leader" : "node";
  row.dataset.role = node.role;
  if (isLeader) row.setAttribute("aria-current", "true");
  const lag = leader === null || node.applied === undefined
    ? null : Math.max(0, leader.last_index - node.applied);
  const roleCell = cell("td", badge(node.role, node.role));
  if (!node.healthy) roleCell.append(" ", badge("no leader", "warn"));
  row.append(
    cell("th", nodeLabel(node)),
    roleCell,
    cell("td", node.term, "num"),
    cell("td", node.leader_id ? `node ${node.leader_id}` : "none", "num"),
    cell("td", node.last_index, "num"),
    cell("td", node.commit, "num"),
    cell("td", node.applied, "num"),
    cell("td", lag, lag !== null && lag >= LAG_WARN ? "num lagging" : "num"),
    cell("td", node.keys, "num"),
  );
  row.firstChild.setAttribute("scope", "row");
  return row;
}

/** Writes per second from the growth of the leader's commit index between two polls. */
function sampleRate(nodes, leader, at) {
  const source = leader !== null ? [leader] : nodes.filter(isReachable);
  const commits = source.map((n) => n.commit).filter((c) => typeof c === "number");
  if (commits.length === 0) return;
  const commit = Math.max(...commits);
  const last = rate.last;
  rate.last = { at, commit };
  if (last === null || commit < last.commit || at <= last.at) return;  // first sample, or a reset
  rate.samples.push((commit - last.commit) / ((at - last.at) / 1000));
  if (rate.samples.length > HISTORY) rate.samples.shift();
}

function formatRate(value) {
  return value >= 100 ? value.toFixed(0) : value.toFixed(1);
}

function drawSparkline() {
  const samples = rate.samples;
  const peak = samples.length ? Math.max(...samples) : 0;
  const scale = Math.max(peak, 1);
  const step = (SPARK_WIDTH - 2 * SPARK_PAD) / (HISTORY - 1);
  const start = SPARK_WIDTH - SPARK_PAD - step * (samples.length - 1);
  const bottom = SPARK_HEIGHT - 1;
  const points = samples.map((value, i) => {
    const x = start + step * i;
    const y = bottom - (value / scale) * (SPARK_HEIGHT - 2 * SPARK_PAD);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  $("spark-line").setAttribute("points", points.join(" "));
  $("spark-area").setAttribute("d", points.length > 1
    ? `M${start.toFixed(1)},${bottom} L${points.join(" L")} L${(SPARK_WIDTH - SPARK_PAD).toFixed(1)},${bottom} Z`
    : "");
  $("spark-peak").textContent = formatRate(peak);
  const now = samples.length ? formatRate(samples[samples.length - 1]) : NONE;
  $("stat-rate").textContent = now;
  $("sparkline-title").textContent = samples.length
    ? `Writes per second over the last ${samples.length} s: now ${now}, peak ${formatRate(peak)}`
    : "Writes per second: no samples yet";
}

function render(nodes, at) {
  const leader = leaderOf(nodes);
  const up = nodes.filter(isReachable);
  const rows = [...nodes].sort((a, b) => a.id - b.id).map((node) => nodeRow(node, leader));
  $("node-rows").replaceChildren(...rows);
  sampleRate(nodes, leader, at);
  drawSparkline();

  const terms = up.map((n) => n.term).filter((t) => typeof t === "number");
  $("stat-leader").textContent = leader ? `node ${leader.id}` : "none";
  $("stat-term").textContent = terms.length ? String(Math.max(...terms)) : NONE;
  $("stat-commit").textContent = leader ? String(leader.commit) : NONE;
  $("stat-up").textContent = `${up.length} of ${nodes.length}`;

  const down = nodes.length - up.length;
  const parts = [`${nodes.length} node${nodes.length === 1 ? "" : "s"}`];
  parts.push(leader ? `leader: node ${leader.id} (term ${leader.term})` : "no leader");
  if (down) parts.push(`${down} unreachable`);
  $("summary").textContent = parts.join(" · ");
  document.body.dataset.state = leader ? (down ? "degraded" : "live") : "no-leader";
  $("updated").textContent = new Date().toLocaleTimeString();
  $("updated").setAttribute("datetime", new Date().toISOString());
}

function renderError(message) {
  document.body.dataset.state = "error";
  $("summary").textContent = `This node is not answering (${message}); retrying every second…`;
}

async function refresh() {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
  try {
    const headers = { Accept: "application/json" };
    if (token) {
      headers.Authorization = `Bearer ${token}`;
    }
    const response = await fetch(CLUSTER_URL, { cache: "no-store", signal: controller.signal, headers });
    const body = await response.json().catch(() => null);
    if (response.status === 401 || response.status === 403) {
      renderError("it needs a read token: open this page as /#token=TOKEN");
    } else if (response.ok && Array.isArray(body)) {
      render(body, performance.now());
    } else if (body && Array.isArray(body.nodes)) {
      render(body.nodes, performance.now());  // no leader to ask: this node's own view
    } else {
      renderError(body && body.error ? body.error : `HTTP ${response.status}`);
    }
  } catch (error) {
    renderError(error.name === "AbortError" ? "timed out" : "connection failed");
  } finally {
    clearTimeout(timer);
    setTimeout(refresh, REFRESH_MS);
  }
}

/** One committed change at the top of the table; the oldest beyond CHANGES_SHOWN drops. */
function showChange(change) {
  const rows = $("change-rows");
  rows.querySelector(".placeholder")?.remove();
  const row = document.createElement("tr");
  row.className = `change change-${change.type}`;
  row.dataset.revision = String(change.revision);
  const value = change.value === null || change.value === undefined ? ""
    : change.value.length > VALUE_SHOWN ? `${change.value.slice(0, VALUE_SHOWN)}…` : change.value;
  row.append(cell("td", change.revision, "num"), cell("td", badge(change.type, change.type)),
    cell("td", change.key), cell("td", value));
  rows.prepend(row);
  while (rows.children.length > CHANGES_SHOWN) rows.lastChild.remove();
  $("changes-state").textContent = `Streaming: last change at revision ${change.revision}.`;
}

/** A named last event (cut, compacted, unavailable): say it; the stream then resumes. */
function streamEnded(name, data) {
  const detail = data && data.error ? data.error : name;
  $("changes-state").textContent = `Stream ended (${detail}); reconnecting…`;
}

/** Without a token: the browser's EventSource, which resumes by itself with Last-Event-ID. */
function watchWithEventSource() {
  let source = new EventSource(WATCH_URL);
  const listen = () => {
    source.onopen = () => { $("changes-state").textContent = "Streaming: waiting for a change…"; };
    source.onmessage = (message) => showChange(JSON.parse(message.data));
    source.onerror = () => { $("changes-state").textContent = "Stream interrupted; reconnecting…"; };
    for (const name of ["cut", "unavailable"]) {
      source.addEventListener(name, (message) => streamEnded(name, JSON.parse(message.data)));
    }
    source.addEventListener("compacted", (message) => {
      streamEnded("compacted", JSON.parse(message.data));
      source.close();  // its Last-Event-ID is gone from the history: start again from now
      source = new EventSource(WATCH_URL);
      listen();
    });
  };
  listen();
}

/**
 * With a token: EventSource cannot send an Authorization header, so read the stream with
 * fetch, splitting it into events at blank lines, and resume from the last id ourselves.
 */
async function watchWithToken(lastId) {
  let last = lastId;
  try {
    const headers = { Authorization: `Bearer ${token}`, Accept: "text/event-stream" };
    if (last !== null) headers["Last-Event-ID"] = last;
    const response = await fetch(WATCH_URL, { cache: "no-store", headers });
    if (response.status === 410) last = null;  // compacted: start again from now
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    $("changes-state").textContent = "Streaming: waiting for a change…";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const fields = { event: "message", data: "" };
        for (const line of buffered.slice(0, end).split("\n")) {
          const colon = line.indexOf(":");
          if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1).trim();
        }
        buffered = buffered.slice(end + 2);
        if (!fields.data) continue;  // a heartbeat or the retry hint
        if (fields.event === "message") {
          last = fields.id;
          showChange(JSON.parse(fields.data));
        } else {
          streamEnded(fields.event, JSON.parse(fields.data));
          if (fields.event === "compacted") last = null;
        }
      }
    }
  } catch (error) {
    $("changes-state").textContent = `Stream interrupted (${error.message}); reconnecting…`;
  }
  setTimeout(() => watchWithToken(last), RECONNECT_MS);
}

refresh();
if (token) watchWithToken(null);
else watchWithEventSource();
