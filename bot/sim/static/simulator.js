// The simulator page: customers on the left, their phone in the middle, faults and events on the right.
// Everything shown arrives on one event stream (/simulator/api/events), replayed from the start on load,
// so a reload or a second tab shows the same history.
"use strict";

const state = {
  config: null,
  customers: new Map(), // id -> {id, user_id, phone, name, status, agent, messages: [], unread: 0}
  current: null,
  lastSeq: 0,
  pending: new Map(), // id -> timer: waiting for the bot's answer (typing dots)
  duplicateNext: false,
};

const $ = (id) => document.getElementById(id);

const STATUS_TEXT = {
  new: "new conversation",
  bot: "bot",
  waiting: "waiting for an agent",
  with_agent: "with agent",
};

function statusText(c) {
  if (c.status === "with_agent" && c.agent) return `with agent ${c.agent}`;
  return STATUS_TEXT[c.status] || c.status;
}

function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

async function api(path, body) {
  const resp = await fetch(`/simulator/api/${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error((data.error && data.error.message) || `HTTP ${resp.status}`);
  return data;
}

// The agent console (/agent, same origin) keeps its token in sessionStorage under this key; a tab
// opened by window.open() starts with a copy of the opener's sessionStorage, so the console opens
// signed in as the simulator's agent. Elsewhere the token shown under the link signs in by hand.
const CONSOLE_TOKEN_KEY = "agent-token";

function consoleUrl(id) {
  // The fragment carries the token to the console without it reaching any server log.
  const token = state.config && state.config.agent_token;
  const fragment = token ? `#token=${encodeURIComponent(token)}` : "";
  return `/agent?conversation=${encodeURIComponent(id)}${fragment}`;
}

function openConsole(event) {
  if (!state.config || !state.config.console) return;
  event.preventDefault();
  sessionStorage.setItem(CONSOLE_TOKEN_KEY, state.config.agent_token);
  window.open($("console-link").href, "_blank");
}

// -- rendering -------------------------------------------------------------------------------------
function renderCustomers() {
  const list = $("customer-list");
  list.replaceChildren();
  for (const c of state.customers.values()) {
    const li = document.createElement("li");
    li.dataset.testid = "customer-item";
    li.dataset.customer = c.id;
    if (c.id === state.current) li.classList.add("current");
    const text = document.createElement("div");
    const name = document.createElement("div");
    name.className = "cname";
    name.textContent = c.name;
    const cid = document.createElement("div");
    cid.className = "cid";
    cid.textContent = `${c.user_id ? c.user_id + " · " : "phone only · "}${c.phone} · ${statusText(c)}`;
    text.append(name, cid);
    li.append(text);
    if (c.unread) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(c.unread);
      li.append(badge);
    }
    li.addEventListener("click", () => select(c.id));
    list.append(li);
  }
}

function bubble(m) {
  const div = document.createElement("div");
  const mine = m.direction === "in";
  div.className = `bubble ${mine ? "mine" : "theirs"}`;
  div.dataset.testid = mine ? "sent" : "received";
  if (!mine) {
    div.classList.add(m.role || "bot");
    div.dataset.role = m.role || "bot";
    const from = document.createElement("span");
    from.className = "from";
    from.textContent =
      m.role === "agent" ? `Agent ${m.agent || ""}`.trim() : m.role === "system" ? "Notice" : "Bot";
    if (m.template) from.textContent += " · template";
    div.append(from);
  }
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = m.text;
  div.append(text);
  const when = document.createElement("span");
  when.className = "when";
  let stamp = clock(m.at);
  if (mine) {
    if (m.http_status >= 400) {
      div.classList.add("failed");
      stamp += ` · not accepted (${m.http_status})`;
    } else {
      stamp += m.duplicate ? " ✓✓ sent twice" : " ✓";
    }
  }
  when.textContent = stamp;
  div.append(when);
  return div;
}

function renderPhone() {
  const c = state.customers.get(state.current);
  const box = $("messages");
  box.replaceChildren();
  if (!c) return;
  $("avatar").textContent = (c.name || "?").slice(0, 1).toUpperCase();
  $("who-name").textContent = c.name;
  $("who-id").textContent = c.user_id ? `user_id ${c.user_id} · ${c.phone}` : `${c.phone} (no Braze user_id)`;
  const status = $("status");
  status.dataset.status = c.status;
  status.textContent = statusText(c);
  if (!c.messages.length) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = "Say hello — the bot answers through the Braze stand-in.";
    box.append(empty);
  }
  for (const m of c.messages) box.append(bubble(m));
  box.scrollTop = box.scrollHeight;
  $("typing").hidden = !state.pending.has(c.id);
  const link = $("console-link");
  link.href = consoleUrl(c.id);
  const hasConsole = state.config && state.config.console;
  link.setAttribute("aria-disabled", hasConsole ? "false" : "true");
  $("console-hint").textContent = hasConsole
    ? `Opens signed in as agent "${state.config.agent_id}" (token ${state.config.agent_token}).`
    : "The agent console (/agent) is not part of this build.";
}

function select(id) {
  state.current = id;
  const c = state.customers.get(id);
  if (c) c.unread = 0;
  renderCustomers();
  renderPhone();
  $("text").focus();
}

function appendLog(ev) {
  const li = document.createElement("li");
  li.className = ev.level || "info";
  const t = document.createElement("time");
  t.textContent = clock(ev.at);
  const span = document.createElement("span");
  span.textContent = ev.text;
  li.append(t, span);
  const log = $("log");
  log.append(li);
  log.scrollTop = log.scrollHeight;
}

function settle(id) {
  const timer = state.pending.get(id);
  if (timer) clearTimeout(timer);
  state.pending.delete(id);
}

// -- events ------------------------------------------------------------------------------------------
function apply(ev) {
  if (ev.seq <= state.lastSeq) return;
  state.lastSeq = ev.seq;
  if (ev.kind === "customer") {
    const c = ev.customer;
    if (!state.customers.has(c.id)) {
      state.customers.set(c.id, { ...c, status: ev.status, agent: "", messages: [], unread: 0 });
    }
    if (!state.current) state.current = c.id;
    renderCustomers();
    renderPhone();
  } else if (ev.kind === "message") {
    const c = state.customers.get(ev.customer);
    if (!c) return;
    c.messages.push(ev);
    if (ev.direction === "out") settle(c.id);
    if (c.id !== state.current) c.unread += 1;
    renderCustomers();
    if (c.id === state.current) renderPhone();
  } else if (ev.kind === "status") {
    const c = state.customers.get(ev.customer);
    if (!c) return;
    c.status = ev.status;
    c.agent = ev.agent || "";
    if (ev.status !== "bot") settle(c.id);
    renderCustomers();
    if (c.id === state.current) renderPhone();
  } else if (ev.kind === "log") {
    appendLog(ev);
  }
}

function connect() {
  const source = new EventSource("/simulator/api/events");
  source.onopen = () => {
    $("conn").textContent = "live";
  };
  source.onerror = () => {
    $("conn").textContent = "reconnecting…";
  };
  source.onmessage = (msg) => apply(JSON.parse(msg.data));
}

// -- actions -----------------------------------------------------------------------------------------
async function send(event) {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text || !state.current) return;
  input.value = "";
  const id = state.current;
  const duplicate = state.duplicateNext;
  state.duplicateNext = false;
  $("dup").setAttribute("aria-pressed", "false");
  try {
    const { answers } = await api("send", { customer: id, text, duplicate });
    const c = state.customers.get(id);
    if (duplicate && c) {
      const mine = [...c.messages].reverse().find((m) => m.direction === "in" && m.text === text);
      if (mine) mine.duplicate = true;
    }
    if (answers[0].http_status === 202 && (!c || c.status === "bot" || c.status === "new")) {
      settle(id);
      // The dots stop when the answer arrives, the conversation leaves the bot, or after a minute.
      state.pending.set(id, setTimeout(() => { settle(id); renderPhone(); }, 60000));
    }
    renderPhone();
  } catch (err) {
    appendLog({ at: Date.now() / 1000, level: "error", text: `Could not send: ${err.message}` });
  }
}

async function newCustomer(event) {
  event.preventDefault();
  const form = event.target;
  const body = {
    name: form.name.value,
    phone: form.phone.value,
    user_id: form.with_user_id.checked ? form.user_id.value : "",
    with_user_id: form.with_user_id.checked,
  };
  $("customer-error").textContent = "";
  try {
    const c = await api("customers", body);
    if (!state.customers.has(c.id)) {
      state.customers.set(c.id, { ...c, agent: "", messages: [], unread: 0 });
    }
    form.reset();
    form.with_user_id.checked = true;
    select(c.id);
  } catch (err) {
    $("customer-error").textContent = err.message;
  }
}

async function fault(button) {
  const kind = button.dataset.fault;
  let times = button.dataset.times;
  if (times === "dead") times = state.config ? state.config.braze_max_attempts : 5;
  const body = { kind, times: Number(times || 1) };
  if (button.dataset.seconds) body.seconds = Number(button.dataset.seconds);
  try {
    await api("faults", body);
  } catch (err) {
    appendLog({ at: Date.now() / 1000, level: "error", text: `Could not inject: ${err.message}` });
  }
}

async function start() {
  state.config = await api("config");
  $("backend").textContent = `${state.config.backend} backend`;
  $("composer").addEventListener("submit", send);
  $("console-link").addEventListener("click", openConsole);
  $("new-customer").addEventListener("submit", newCustomer);
  $("new-customer").with_user_id.addEventListener("change", (e) => {
    e.target.form.user_id.disabled = !e.target.checked;
  });
  for (const button of document.querySelectorAll("#faults [data-fault]")) {
    button.addEventListener("click", () => fault(button));
  }
  $("dup").addEventListener("click", () => {
    state.duplicateNext = !state.duplicateNext;
    $("dup").setAttribute("aria-pressed", String(state.duplicateNext));
    if (state.duplicateNext) {
      appendLog({ at: Date.now() / 1000, level: "warn", text: "The next message will be delivered twice, as a Braze retry would" });
    }
  });
  connect();
}

document.addEventListener("DOMContentLoaded", () => {
  start().catch((err) => {
    $("conn").textContent = `error: ${err.message}`;
  });
});
