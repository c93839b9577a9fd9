// The agent console: plain DOM code, no build step. Every text from customers goes in through
// textContent, never innerHTML. The token lives in sessionStorage (gone when the tab closes).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "agent-token";
const state = { token: "", agent: "", filter: "waiting", selected: "", detail: null, source: null,
  refreshTimer: 0, known: new Set() };

async function api(method, path, body) {
  const init = { method, headers: { Authorization: "Bearer " + state.token } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (resp.status === 401) signOut("Your token was refused; sign in again.");
  return { status: resp.status, data };
}

function errorText(data, fallback) {
  return (data && data.error && data.error.message) || fallback;
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.round(s / 60) + " min";
  return Math.round(s / 3600) + " h";
}

function label(conv) {
  return conv.profile_name || conv.user_id || conv.phone_number || conv.id;
}

// -- sign in / out ------------------------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  const { status, data } = await api("GET", "/agent/me");
  if (status !== 200) {
    state.token = "";
    $("signin-error").textContent = status === 401 ? "That token is not valid." : "Could not sign in.";
    return false;
  }
  sessionStorage.setItem(KEY, token);
  state.agent = data.agent;
  $("who").textContent = "Signed in as " + data.agent;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  connect();
  await refreshList();
  const wanted = new URLSearchParams(location.search).get("conversation");
  if (wanted) await openConversation(wanted);
  return true;
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  if (state.source) state.source.close();
  Object.assign(state, { token: "", agent: "", selected: "", detail: null, source: null });
  $("app").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  $("who").textContent = "";
  setLive(false);
  $("signin-error").textContent = message || "";
}

// -- live updates ---------------------------------------------------------------------------------

function setLive(on) {
  $("live").textContent = on ? "live" : "offline";
  $("live").className = "pill " + (on ? "live" : "offline");
}

function connect() {
  if (state.source) state.source.close();
  // EventSource cannot send headers: /agent/events also takes the token as a query parameter.
  const source = new EventSource("/agent/events?token=" + encodeURIComponent(state.token));
  state.source = source;
  source.addEventListener("hello", () => { setLive(true); scheduleRefresh(true); });
  for (const type of ["waiting", "status", "message", "ticket", "resync"]) {
    source.addEventListener(type, (ev) => {
      let note = {};
      try { note = JSON.parse(ev.data); } catch (_) { /* keep-alive or garbage */ }
      if (type === "waiting") announce(note);
      scheduleRefresh(type === "resync" || note.id === state.selected);
    });
  }
  source.onerror = () => {
    setLive(false);
    if (source.readyState === EventSource.CLOSED && state.token) {
      // The browser gave up (e.g. the server answered 401): check the token, then retry.
      setTimeout(async () => {
        if (!state.token) return;
        const { status } = await api("GET", "/agent/me");
        if (status === 200) connect();
      }, 3000);
    }
  };
}

function announce(note) {
  if (document.hidden) document.title = "(new) Agent console";
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) document.title = "Agent console";
});

function scheduleRefresh(detailToo) {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(async () => {
    await refreshList();
    if (detailToo && state.selected) await openConversation(state.selected, true);
  }, 100);
}

// -- the queue ------------------------------------------------------------------------------------

async function refreshList() {
  if (!state.token) return;
  const [list, waiting] = await Promise.all([
    api("GET", "/agent/conversations?status=" + state.filter),
    state.filter === "waiting" ? null : api("GET", "/agent/conversations?status=waiting"),
  ]);
  if (list.status !== 200) return;
  const rows = list.data.conversations;
  $("count-waiting").textContent = String((waiting ? waiting.data.conversations : rows).length);
  const ul = $("conversations");
  ul.replaceChildren();
  for (const conv of rows) {
    const li = document.createElement("li");
    li.dataset.id = conv.id;
    li.dataset.status = conv.status;
    if (conv.id === state.selected) li.classList.add("selected");
    if (!state.known.has(conv.id)) li.classList.add("fresh");
    state.known.add(conv.id);
    const name = document.createElement("div");
    name.className = "conv-name";
    name.textContent = label(conv);
    const meta = document.createElement("div");
    meta.className = "conv-meta";
    const parts = [conv.status.replace("_", " ")];
    if (conv.status === "waiting" && conv.waiting_since) parts.push("waiting " + ago(conv.waiting_since));
    if (conv.assigned_agent) parts.push("with " + conv.assigned_agent);
    if (conv.last_message_at) parts.push("last message " + when(conv.last_message_at));
    meta.textContent = parts.join(" · ");
    li.append(name, meta);
    li.addEventListener("click", () => openConversation(conv.id));
    ul.append(li);
  }
  $("empty").hidden = rows.length > 0;
}

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    state.filter = tab.dataset.filter;
    refreshList();
  });
}

// -- one conversation -----------------------------------------------------------------------------

async function openConversation(id, quiet) {
  const { status, data } = await api("GET", "/agent/conversations/" + encodeURIComponent(id));
  if (status === 404) {
    $("action-error").textContent = "No conversation " + id + ".";
    return;
  }
  if (status !== 200) return;
  const changed = state.selected !== id;
  state.selected = id;
  state.detail = data;
  if (changed) {
    const url = new URL(location.href);
    url.searchParams.set("conversation", id);
    history.replaceState(null, "", url);
    if (!quiet) $("action-error").textContent = "";
  }
  for (const li of $("conversations").children) li.classList.toggle("selected", li.dataset.id === id);
  render(data);
}

function render(conv) {
  $("placeholder").hidden = true;
  $("conversation").hidden = false;
  $("conv-title").textContent = label(conv) + (label(conv) !== conv.id ? " (" + conv.id + ")" : "");
  const st = $("conv-status");
  st.textContent = conv.status.replace("_", " ");
  st.className = "status " + conv.status;
  $("conv-agent").textContent = conv.assigned_agent ? "with " + conv.assigned_agent : "";
  $("conv-window").textContent = conv.window_open
    ? "window open until " + when(conv.window_closes_at)
    : "24-hour window closed (template only)";
  const mine = conv.status === "with_agent" && conv.assigned_agent === state.agent;
  $("claim").disabled = mine || conv.status === "with_agent";
  $("release").disabled = !(mine || conv.status === "waiting");
  $("send").disabled = conv.status === "with_agent" && !mine;

  const list = $("transcript");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren();
  for (const m of conv.messages) {
    const li = document.createElement("li");
    li.className = m.marker ? "system" : m.role;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = m.marker ? "— " + m.text + " —" : m.text;
    const meta = document.createElement("span");
    meta.className = "meta";
    const who = m.role === "agent" ? "agent " + (m.agent || "") : m.role;
    meta.textContent = m.marker ? when(m.at) : who + " · " + when(m.at);
    li.append(text, meta);
    list.append(li);
  }
  if (atBottom) list.lastElementChild && list.lastElementChild.scrollIntoView({ block: "nearest" });

  const audit = $("audit");
  audit.replaceChildren();
  for (const a of conv.audit) {
    const li = document.createElement("li");
    const what = a.event === "status" ? (a.from || "?") + " → " + a.to : a.event.replace(/_/g, " ");
    li.textContent = when(a.at) + " — " + what + (a.by ? " by " + a.by : "") + (a.reason ? ": " + a.reason : "");
    audit.append(li);
  }
}

async function act(path, body) {
  if (!state.selected) return null;
  $("action-error").textContent = "";
  const result = await api("POST", "/agent/conversations/" + encodeURIComponent(state.selected) + path, body);
  if (result.status >= 400) {
    const fallback = "The action failed (" + result.status + ").";
    $("action-error").textContent = result.data && result.data.error && result.data.error.code === "window_closed"
      ? "Not sent: the customer's 24-hour window is closed and no template campaign is configured."
      : errorText(result.data, fallback);
  }
  await openConversation(state.selected, true);
  await refreshList();
  return result;
}

$("claim").addEventListener("click", () => act("/claim"));
$("release").addEventListener("click", () => act("/release"));
$("reply-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("reply").value.trim();
  if (!text) return;
  $("send").disabled = true;
  const result = await act("/messages", { text });
  if (result && result.status === 202) $("reply").value = "";
  if (!state.detail) $("send").disabled = false;
});
$("reply").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("reply-form").requestSubmit();
});

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("signin-error").textContent = "";
  await signIn($("token").value.trim());
  $("token").value = "";
});
$("signout").addEventListener("click", () => signOut(""));

// A link may carry the token in the fragment (never sent to the server, never in logs);
// take it once and drop it from the address bar.
const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromLink) history.replaceState(null, "", location.pathname + location.search);
const saved = fromLink || sessionStorage.getItem(KEY);
if (saved) signIn(saved);
