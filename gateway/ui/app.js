// tenantflow dashboard: plain JavaScript, no build step, no third-party code.
// Every datum comes from the gateway's API with the caller's bearer token, kept in
// sessionStorage (gone with the tab). Text from the API is only ever set as textContent.
"use strict";

const TOKEN_KEY = "tenantflow.token";
const PKCE_KEY = "tenantflow.pkce";
const PAGE_SIZE = 100;
const EXECUTE = "migrations:execute";
const STATES = ["failed", "running", "pending", "succeeded", "up_to_date"];
const LIVE_RUNS = 3;

let config = null;
let me = null;
// Live streams and timers of the page on screen; closed when the route changes.
let live = [];

// ---- small helpers -------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function main() {
  return document.getElementById("main");
}

// Each route change starts a new view; a page still loading for an older view must not draw
// over the newer one (its requests finish later), nor start streams for it.
let generation = 0;

function current() {
  const mine = generation;
  return () => mine === generation;
}

function render(...nodes) {
  main().replaceChildren(...nodes);
}

function stateBadge(state) {
  return el("span", { class: `state state-${state}` }, state);
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function notice(message, kind) {
  return el("div", { class: kind === "info" ? "notice info" : "notice", role: "status" }, message);
}

function isOperator() {
  return Boolean(me && me.permissions.includes(EXECUTE));
}

function temporalLink(workflowId) {
  if (!config || !config.temporal_ui_url) return null;
  const ns = encodeURIComponent(config.temporal_namespace);
  const href = `${config.temporal_ui_url}/namespaces/${ns}/workflows/${encodeURIComponent(workflowId)}`;
  return el("a", { href, target: "_blank", rel: "noopener", id: "temporal-link" },
    "History in Temporal");
}

function stopLive() {
  for (const stop of live) stop();
  live = [];
}

// ---- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && token) {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    location.hash = "#/signin";
    throw new ApiError(401, "signed out: sign in again");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error.message;
    } catch (_ignored) {
      // not JSON: keep the status line
    }
    throw new ApiError(response.status, message);
  }
  if (response.status === 204) return null;
  return response.json();
}

// Server-Sent Events over fetch(), so the token travels in the Authorization header (EventSource
// cannot send headers, and a token in the URL would land in access logs).
function stream(path, onEvent) {
  const controller = new AbortController();
  (async () => {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const response = await fetch(path, {
      headers: { Accept: "text/event-stream", Authorization: `Bearer ${token}` },
      signal: controller.signal,
    });
    if (!response.ok || !response.body) return;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onEvent(event, data.join("\n"));
      }
    }
  })().catch(() => {
    // aborted, or the connection dropped: the page's poll shows the state
  });
  return () => controller.abort();
}

// ---- sign-in ---------------------------------------------------------------------------------

function base64url(bytes) {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function redirectUri() {
  return `${location.origin}/ui/`;
}

// Authorization code with PKCE (RFC 7636) against the realm: the production sign-in.
async function startPkce() {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const state = base64url(crypto.getRandomValues(new Uint8Array(16)));
  const challenge = base64url(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state }));
  const query = new URLSearchParams({
    response_type: "code",
    client_id: config.client_id,
    redirect_uri: redirectUri(),
    scope: "openid",
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  });
  location.assign(`${config.authorization_endpoint}?${query}`);
}

async function finishPkce() {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return;
  const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || "null");
  sessionStorage.removeItem(PKCE_KEY);
  // Drop code and state from the address bar (and from history) whatever happens next.
  history.replaceState(null, "", `${location.pathname}#/`);
  if (params.has("error")) throw new Error(`sign-in refused: ${params.get("error")}`);
  if (!saved || saved.state !== params.get("state")) throw new Error("sign-in state mismatch");
  const response = await fetch(config.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: params.get("code"),
      redirect_uri: redirectUri(),
      client_id: config.client_id,
      code_verifier: saved.verifier,
    }),
  });
  if (!response.ok) throw new Error(`the realm refused the code (${response.status})`);
  const issued = await response.json();
  sessionStorage.setItem(TOKEN_KEY, issued.access_token);
}

function signInPage(message) {
  stopLive();
  const error = el("div");
  if (message) error.append(notice(message));
  const username = el("input", { id: "username", autocomplete: "username", required: true });
  const password = el("input", {
    id: "password", type: "password", autocomplete: "current-password", required: true,
  });
  const pasted = el("textarea", { id: "token-input", placeholder: "eyJhbGciOi…" });

  async function signIn(event) {
    event.preventDefault();
    error.replaceChildren();
    try {
      const issued = await api("/api/v1/auth/token", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          grant_type: "password", username: username.value, password: password.value,
        }),
      });
      password.value = "";
      sessionStorage.setItem(TOKEN_KEY, issued.access_token);
      await afterSignIn();
    } catch (err) {
      error.append(notice(err.message));
    }
  }

  async function useToken(event) {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, pasted.value.trim());
    pasted.value = "";
    try {
      await afterSignIn();
    } catch (err) {
      error.append(notice(err.message));
    }
  }

  render(
    el("h1", {}, "Sign in"),
    error,
    el("div", { class: "grid" },
      el("section", { class: "card" },
        el("h2", {}, "Single sign-on"),
        el("p", { class: "muted" }, "Keycloak: authorization code with PKCE."),
        el("button", { id: "pkce-signin", class: "primary", type: "button",
          onclick: () => startPkce().catch((err) => error.append(notice(err.message))) },
        "Sign in with the realm")),
      el("section", { class: "card" },
        el("h2", {}, "User name and password"),
        el("form", { class: "signin", id: "signin-form", onsubmit: signIn },
          el("label", { for: "username" }, "User"), username,
          el("label", { for: "password" }, "Password"), password,
          el("button", { class: "primary", type: "submit", id: "signin-submit" }, "Sign in"))),
      el("section", { class: "card" },
        el("h2", {}, "Bearer token"),
        el("form", { class: "signin", onsubmit: useToken },
          pasted, el("button", { type: "submit", id: "token-submit" }, "Use token")))));
}

async function afterSignIn() {
  me = await api("/api/v1/auth/me");
  showWho();
  if (location.hash.startsWith("#/signin") || !location.hash) location.hash = "#/";
  else route();
}

function showWho() {
  const who = document.getElementById("whoami");
  const out = document.getElementById("signout");
  if (me) {
    who.textContent = `${me.username || me.subject}${isOperator() ? " (operator)" : " (viewer)"}`;
    out.hidden = false;
  } else {
    who.textContent = "";
    out.hidden = true;
  }
}

// ---- fleet overview ------------------------------------------------------------------------

function progressBar(counts, total) {
  const done = counts.succeeded + counts.failed + counts.up_to_date;
  const share = total ? (100 * done) / total : 0;
  const failed = total ? (100 * counts.failed) / total : 0;
  // Widths through the CSSOM: the CSP allows no inline style attributes.
  const red = el("span", { class: "failed" });
  red.style.width = `${failed}%`;
  const blue = el("span");
  blue.style.width = `${Math.max(0, share - failed)}%`;
  return el("div", { class: "bar" }, red, blue);
}

function doneOf(progress) {
  const c = progress.counts;
  return c.succeeded + c.failed + c.up_to_date;
}

// A browser holds about six connections per server: a few live streams leave room for the
// page's own calls; further runs show the summary's numbers (open the run to watch it).
function activeRunCard(run, streamed, snapshot) {
  const numbers = el("span", { class: "run-done" }, "…");
  const status = el("span", {}, stateBadge(run.status));
  const bar = el("div");
  const card = el("section", { class: "card active-run", "data-run-id": run.run_id },
    el("div", { class: "toolbar" },
      el("a", { href: `#/runs/${encodeURIComponent(run.run_id)}` }, run.run_id),
      el("span", { class: "muted" }, run.set_name || ""), status),
    bar, el("div", {}, numbers, " targets done"));
  function show(progress) {
    numbers.textContent = `${doneOf(progress)} / ${progress.total}`;
    status.replaceChildren(stateBadge(progress.status));
    bar.replaceChildren(progressBar(progress.counts, progress.total));
  }
  if (snapshot && snapshot.counts && snapshot.total != null) show(snapshot);
  if (!streamed) return card;
  live.push(stream(`/api/v1/migrations/${encodeURIComponent(run.run_id)}/stream?targets=none`,
    (event, data) => {
      if (event === "progress") show(JSON.parse(data));
    }));
  return card;
}

function runsTable(runs) {
  return el("table", { id: "recent-runs" },
    el("thead", {}, el("tr", {}, ["Run", "Set", "Status", "Requester", "Started", "Closed", ""]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, runs.map((run) => el("tr", {},
      el("td", {}, el("a", { href: `#/runs/${encodeURIComponent(run.run_id)}` }, run.run_id)),
      el("td", {}, run.set_name || ""), el("td", {}, stateBadge(run.status)),
      el("td", {}, run.requester || ""), el("td", {}, when(run.started_at)),
      el("td", {}, when(run.closed_at)), el("td", {}, temporalLink(run.workflow_id))))));
}

function targetsList(page, empty) {
  if (!page.items.length) return el("p", { class: "muted" }, empty);
  return el("ul", {}, page.items.map((db) => el("li", {}, db.name,
    db.tenant_id ? el("span", { class: "muted" }, " tenant ",
      el("a", { href: `#/tenants/${encodeURIComponent(db.tenant_id)}` }, db.tenant_id)) : null)));
}

function versionsTable(sets) {
  if (!sets.length) return el("p", { class: "muted" }, "No checked targets yet.");
  return el("table", { id: "versions" },
    el("thead", {}, el("tr", {}, ["Set", "Version", "Targets", "Drifted"]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, sets.flatMap((set) => set.versions.map((v) => el("tr", {},
      el("td", {}, set.set_name), el("td", {}, v.version ?? "none"),
      el("td", {}, v.targets), el("td", {}, v.drifted ?? ""))))));
}

// Targets per version per set: the monitoring summary when the gateway has it, else the drift
// report of each registered set (one request per set).
// The monitoring summary, or null on a gateway without it.
async function monitoringSummary() {
  try {
    return await api("/api/v1/monitoring/summary");
  } catch (err) {
    if (err.status === 404) return null;
    throw err;
  }
}

async function versionsBySet(summary) {
  if (summary) {
    return summary.health.sets.map((set) => ({
      set_name: set.set_name,
      versions: Object.entries(set.versions).map(([version, targets]) => ({ version, targets })),
    }));
  }
  const sets = await api("/api/v1/migration-sets");
  const reports = await Promise.all(sets.items.slice(0, 20).map((set) =>
    api(`/api/v1/drift?set=${encodeURIComponent(set.name)}`).catch(() => null)));
  return reports.filter(Boolean).map((report) => ({
    set_name: report.set_name,
    versions: report.versions.map((v) => ({
      version: v.version, targets: v.targets, drifted: v.drifted.length,
    })),
  }));
}

async function overviewPage() {
  const fresh = current();
  render(el("h1", {}, "Fleet"), el("p", { class: "muted" }, "Loading…"));
  const [running, paused, recent] = await Promise.all([
    api("/api/v1/migrations?status=running&page_size=10"),
    api("/api/v1/migrations?status=paused&page_size=10"),
    api("/api/v1/migrations?page_size=20"),
  ]);
  const health = (filter) => api(`/api/v1/databases?health=${filter}&limit=20`)
    .catch(() => ({ items: [] }));
  const summary = await monitoringSummary().catch(() => null);
  const [unreachable, drifted, behind, versions] = await Promise.all([
    health("unreachable"), health("drifted"), health("behind"),
    versionsBySet(summary).catch(() => []),
  ]);
  if (!fresh()) return;
  const active = [...running.items, ...paused.items];
  const known = new Map(((summary && summary.active_runs) || []).map((r) => [r.run_id, r]));
  render(
    el("h1", {}, "Fleet"),
    el("h2", {}, "Active runs"),
    el("div", { class: "grid", id: "active-runs" },
      active.length
        ? active.map((run, i) => activeRunCard(run, i < LIVE_RUNS, known.get(run.run_id)))
        : el("p", { class: "muted" }, "No active run.")),
    el("section", { class: "card" }, el("h2", {}, "Recent runs"), runsTable(recent.items)),
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", {}, "Targets per version"),
        versionsTable(versions)),
      el("section", { class: "card", id: "unhealthy" },
        el("h2", {}, "Unreachable"), targetsList(unreachable, "None."),
        el("h2", {}, "Drifted"), targetsList(drifted, "None."),
        el("h2", {}, "Behind"), targetsList(behind, "None."))));
}

// ---- a run -----------------------------------------------------------------------------------

async function control(runId, action) {
  if (action === "cancel" && !confirm(`Cancel run ${runId}? No new target will start.`)) return;
  await api(`/api/v1/migrations/${encodeURIComponent(runId)}/${action}`, { method: "POST" });
}

async function runPage(runId) {
  const base = `/api/v1/migrations/${encodeURIComponent(runId)}`;
  const fresh = current();
  const first = await api(`${base}?targets=none`);
  if (!fresh()) return;
  const message = el("div");
  const status = el("span", { id: "run-status" });
  const stats = el("div", { class: "stats" });
  const bar = el("div");
  const buttons = {
    pause: el("button", { id: "btn-pause", type: "button", onclick: act("pause") }, "Pause"),
    resume: el("button", { id: "btn-resume", type: "button", onclick: act("resume") }, "Resume"),
    cancel: el("button", { id: "btn-cancel", type: "button", class: "danger",
      onclick: act("cancel") }, "Cancel"),
  };
  // Viewers see the run but no control (the API would refuse them anyway).
  const controls = el("div", { class: "toolbar" }, isOperator()
    ? [buttons.pause, buttons.resume, buttons.cancel]
    : el("span", { class: "muted" }, "Read-only: pausing needs migrations:execute."));
  const stateFilter = el("select", { id: "state-filter" },
    el("option", { value: "all" }, "all states"),
    STATES.map((s) => el("option", { value: s }, s)),
    el("option", { value: "done" }, "done (succeeded or up to date)"));
  const search = el("input", { id: "search", type: "search", placeholder: "search this page" });
  const body = el("tbody");
  const pageInfo = el("span", { class: "muted", id: "page-info" });
  const prev = el("button", { id: "prev-page", type: "button" }, "Previous");
  const next = el("button", { id: "next-page", type: "button" }, "Next");
  // Cursors of the pages seen, for "Previous"; the current page is the last. A filtered page
  // may hold fewer rows than PAGE_SIZE, so the rows before each page are kept alongside.
  let cursors = [null];
  let before = [0];
  let rows = [];
  let nextCursor = null;
  let lastStatus = first.status;

  function showProgress(p) {
    lastStatus = p.status;
    status.textContent = p.status + (p.paused_reason ? ` (${p.paused_reason})` : "");
    status.className = `state state-${p.status}`;
    const c = p.counts;
    const cells = [["run-done", "done", doneOf(p)], ["run-total", "total", p.total],
      ["run-failed", "failed", c.failed], ["run-running", "running", c.running],
      ["run-rate", "per minute", Math.round(p.throughput_per_minute)],
      ["run-eta", "ETA", p.eta_seconds == null ? "–" : `${Math.round(p.eta_seconds)} s`]];
    stats.replaceChildren(...cells.map(([id, label, value]) =>
      el("div", {}, el("b", { id }, value), el("span", { class: "muted" }, label))));
    bar.replaceChildren(progressBar(c, p.total));
    // The buttons stay the same elements (a click never lands on a replaced one); only
    // whether each applies changes.
    const live = ["running", "paused"].includes(p.status);
    buttons.pause.disabled = p.status !== "running";
    buttons.resume.disabled = p.status !== "paused";
    buttons.cancel.disabled = !live;
  }

  function act(action) {
    return async (event) => {
      event.target.disabled = true;
      message.replaceChildren();
      try {
        await control(runId, action);
        message.append(notice(`${action} sent`, "info"));
      } catch (err) {
        message.append(notice(err.message));
        event.target.disabled = false;
      }
    };
  }

  function showRows() {
    const needle = search.value.trim().toLowerCase();
    const shown = rows.filter((row) => !needle || row.text.includes(needle));
    body.replaceChildren(...shown.map((row) => row.node));
  }

  let loads = 0;

  async function loadPage() {
    const cursor = cursors[cursors.length - 1];
    const query = new URLSearchParams({ state: stateFilter.value, limit: String(PAGE_SIZE) });
    if (cursor) query.set("cursor", cursor);
    // Only the newest request draws: an older page (another filter) may answer later.
    const mine = ++loads;
    // Every target of the run in one state, page by page (the run's progress holds only the
    // targets in flight, the failed ones kept and the latest results).
    const page = await api(`${base}/targets?${query}`);
    if (mine !== loads || !fresh()) return;
    nextCursor = page.next_cursor;
    rows = page.items.map((t) => {
      const id = t.database_id;
      const name = t.name || id;
      const node = el("tr", { "data-target-id": id, class: `target target-${t.state}` },
        el("td", {}, name, el("div", { class: "muted" }, el("code", {}, id))),
        el("td", {}, stateBadge(t.state)), el("td", {}, t.from_version ?? ""),
        el("td", {}, t.to_version ?? ""), el("td", { class: "error" }, t.error ?? ""));
      const text = [name, id, t.state, t.from_version, t.to_version, t.error]
        .join(" ").toLowerCase();
      return { node, text };
    });
    const from = before[before.length - 1];
    const unlisted = page.failed_not_listed
      ? ` · ${page.failed_not_listed} more failed targets were counted, not kept` : "";
    pageInfo.textContent = (rows.length
      ? `targets ${from + 1}–${from + rows.length}`
      : nextCursor ? "none on this page: try the next" : "no targets in this view") + unlisted;
    prev.disabled = cursors.length < 2;
    next.disabled = !nextCursor;
    showRows();
  }

  function reload() {
    loadPage().catch((err) => message.replaceChildren(notice(err.message)));
  }

  stateFilter.addEventListener("change", () => { cursors = [null]; before = [0]; reload(); });
  search.addEventListener("input", showRows);
  prev.addEventListener("click", () => { cursors.pop(); before.pop(); reload(); });
  next.addEventListener("click", () => {
    before.push(before[before.length - 1] + rows.length);
    cursors.push(nextCursor);
    reload();
  });

  render(
    el("h1", {}, "Run ", el("code", { id: "run-id" }, runId), " ", status),
    el("p", { class: "muted" }, `Set ${first.set_name} · ${first.kind} · started `,
      when(first.started_at), " · ", temporalLink(`migrate-fleet-${runId}`)),
    message, stats, bar, controls,
    el("section", { class: "card" },
      el("div", { class: "toolbar" }, stateFilter, search, prev, next, pageInfo),
      el("table", { id: "targets-table" },
        el("thead", {}, el("tr", {}, ["Target", "State", "From", "To", "Error"]
          .map((h) => el("th", {}, h)))),
        body)));
  showProgress(first);
  await loadPage();
  if (!fresh()) return;

  // Live numbers over SSE (counts only); the table follows at most every few seconds.
  let tableAt = Date.now();
  live.push(stream(`${base}/stream?targets=none`, (event, data) => {
    if (event !== "progress") return;
    const progress = JSON.parse(data);
    const changed = progress.status !== lastStatus;
    showProgress(progress);
    if (changed || Date.now() - tableAt > 5000) {
      tableAt = Date.now();
      reload();
    }
  }));
}

// ---- a tenant --------------------------------------------------------------------------------

async function tenantsPage() {
  const fresh = current();
  const page = await api("/api/v1/tenants?limit=100");
  if (!fresh()) return;
  const input = el("input", { id: "tenant-id", placeholder: "tenant id" });
  render(
    el("h1", {}, "Tenants"),
    el("form", { class: "toolbar", onsubmit: (event) => {
      event.preventDefault();
      location.hash = `#/tenants/${encodeURIComponent(input.value.trim())}`;
    } }, input, el("button", { type: "submit" }, "Open")),
    el("table", {},
      el("thead", {}, el("tr", {}, ["Tenant", "Status", "Mode", "Database", "Versions"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, page.items.map((t) => el("tr", {},
        el("td", {}, el("a", { href: `#/tenants/${encodeURIComponent(t.tenant_id)}` },
          t.tenant_id)),
        el("td", {}, stateBadge(t.status)), el("td", {}, t.mode),
        el("td", {}, t.database + (t.schema_name ? `.${t.schema_name}` : "")),
        el("td", {}, Object.entries(t.versions || {}).map(([s, v]) => `${s} ${v ?? "–"}`)
          .join(", ")))))));
}

async function tenantPage(tenantId) {
  const fresh = current();
  const tenant = await api(`/api/v1/tenants/${encodeURIComponent(tenantId)}`);
  let health = null;
  if (tenant.database_id) {
    health = await api(`/api/v1/databases/${tenant.database_id}/health`).catch(() => null);
  }
  if (!fresh()) return;
  const fields = [["Status", stateBadge(tenant.status)], ["Mode", tenant.mode],
    ["Server", tenant.server || ""], ["Database", tenant.database],
    ["Schema", tenant.schema_name || ""], ["Role", tenant.role],
    ["Target", tenant.database_id || ""],
    ["Labels", Object.entries(tenant.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")]];
  render(
    el("h1", {}, "Tenant ", el("code", {}, tenant.tenant_id)),
    el("section", { class: "card" }, el("table", { id: "tenant" }, el("tbody", {},
      fields.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))))),
    el("section", { class: "card" }, el("h2", {}, "Versions"),
      el("table", {}, el("tbody", {}, Object.entries(tenant.versions || {}).map(([s, v]) =>
        el("tr", {}, el("th", {}, s), el("td", {}, v ?? "none")))))),
    health ? el("section", { class: "card" }, el("h2", {}, "Health"),
      el("p", {}, health.reachable ? "reachable" : "unreachable",
        health.drifted ? " · drifted" : "", ` · checked ${when(health.checked_at)}`)) : null);
}

// ---- routing ---------------------------------------------------------------------------------

async function route() {
  generation += 1;
  stopLive();
  const fresh = current();
  const hash = location.hash || "#/";
  if (!sessionStorage.getItem(TOKEN_KEY) || hash.startsWith("#/signin")) {
    signInPage();
    return;
  }
  try {
    if (!me) {
      me = await api("/api/v1/auth/me");
      showWho();
    }
    const parts = hash.slice(2).split("/").map(decodeURIComponent);
    if (parts[0] === "runs" && parts[1]) await runPage(parts[1]);
    else if (parts[0] === "tenants" && parts[1]) await tenantPage(parts[1]);
    else if (parts[0] === "tenants") await tenantsPage();
    else await overviewPage();
  } catch (err) {
    if (err.status !== 401 && fresh()) render(notice(err.message));
  }
}

async function start() {
  config = await (await fetch("config.json")).json();
  document.getElementById("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    showWho();
    location.hash = "#/signin";
  });
  window.addEventListener("hashchange", route);
  try {
    await finishPkce();
  } catch (err) {
    signInPage(err.message);
    return;
  }
  await route();
}

start();
