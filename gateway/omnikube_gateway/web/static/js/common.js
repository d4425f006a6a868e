/**
 * What every page needs: URLs that work behind any prefix (Service, Ingress path, HTTPS), JSON
 * calls with readable errors, the header (nav + service status pill), and small DOM helpers.
 *
 * Every URL is relative to the document's base, so a page served at https://host/omni/turnbased
 * calls https://host/omni/api/... and wss://host/omni/ws/...; nothing assumes the site root.
 */

import { currentLang, serverDefaultLang, setLang, startI18n } from "./i18n.js";

const API_KEY_STORE = "omnikube_api_key";

/** An API key from ?api_key= (remembered) or an earlier visit; null when auth is off. */
export function apiKey() {
  const fromUrl = new URLSearchParams(location.search).get("api_key");
  if (fromUrl) localStorage.setItem(API_KEY_STORE, fromUrl);
  return fromUrl || localStorage.getItem(API_KEY_STORE);
}

export function httpUrl(path) {
  return new URL(path, document.baseURI).href;
}

/** For what the browser fetches by itself (<audio>, <video>, <img>, a download link), which sends
 * no Authorization header: the page's API key rides in the query string, as on WebSockets. */
export function keyedUrl(path) {
  const url = new URL(path, document.baseURI);
  const key = apiKey();
  if (key) url.searchParams.set("api_key", key);
  return url.href;
}

/** A file of a recorded session (`path` relative to its folder), fetchable by a media element. */
export function sessionAssetUrl(id, path) {
  return keyedUrl(`api/sessions/${encodeURIComponent(id)}/assets/${path.split("/").map(encodeURIComponent).join("/")}`);
}

/** ws:// or wss:// to match how the page itself was loaded. */
export function wsUrl(path) {
  const url = new URL(keyedUrl(path));
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** Why a WebSocket closed, in words; `opened` = whether the handshake had succeeded. */
export function closeReason(event, opened) {
  if (!opened) {
    return "the gateway refused the connection (app disabled, API key missing or wrong, or gateway unreachable)";
  }
  return `connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`;
}

/** Log a session socket's end: "Session ended" when normal, the reason otherwise. */
export function logClose(container, event, opened) {
  const normal = opened && event.code === 1000;
  logLine(container, normal ? "Session ended" : `Error: ${closeReason(event, opened)}`, normal ? "system" : "error");
}

/** fetch + JSON (a FormData body goes as multipart); throws an Error whose message carries the server's reason. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const form = body instanceof FormData;
  if (body !== undefined && !form) headers["Content-Type"] = "application/json";
  const response = await fetch(httpUrl(path), {
    method,
    headers,
    body: body === undefined || form ? body : JSON.stringify(body),
    signal,
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  if (!response.ok) {
    const detail = data && (data.detail ?? data.error ?? data.message);
    const reason = typeof detail === "string" ? detail : JSON.stringify(detail ?? text);
    const error = new Error(`${response.status} ${reason}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

/** el("div", {class: "x", onclick: f}, "text", child) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** Save `blob` as a file named `name`: a link to it, clicked, and its URL freed a minute later. */
export function downloadBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  el("a", { href: url, download: name }).click();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** The header's 中文 / EN switch; the whole page follows at once (i18n.js). */
function languageSwitch(nav) {
  const label = () => (currentLang() === "zh" ? "EN" : "中文");
  const button = el("button", { type: "button", id: "lang", class: "lang", "data-no-i18n": true,
    title: "中文 / English" }, label());
  button.addEventListener("click", () => {
    setLang(currentLang() === "zh" ? "en" : "zh");
    button.textContent = label();
  });
  nav.after(button);
  frontendDefaults().then((d) => {
    serverDefaultLang(d.default_lang);
    button.textContent = label();
  });
}

/** The page in the chosen language from now on, with the 中文 / EN switch after the header's nav. */
export function pageLanguage(nav = $("#nav")) {
  startI18n();
  if (nav) languageSwitch(nav);
}

/** Header nav from GET /api/apps (the static links in the HTML stay if the call fails), and the language. */
export async function buildNav(current) {
  const nav = $("#nav");
  if (!nav) return;
  pageLanguage(nav);

  try {
    const { apps } = await api("api/apps");
    const links = [el("a", { href: "./" }, "Home")];
    for (const app of apps) {
      if (app.app_id === "half_duplex_audio") continue;
      links.push(el("a", { href: app.route.replace(/^\//, "") }, app.name));
    }
    links.push(el("a", { href: "admin" }, "Admin"));
    nav.replaceChildren(...links);
  } catch {
    /* keep the static fallback links */
  }
  for (const a of nav.querySelectorAll("a")) {
    if (new URL(a.href).pathname === new URL(current, document.baseURI).pathname) a.classList.add("current");
  }
}

/**
 * Service status pill fed by GET /status every `intervalMs`.
 * Returns {stop(), latest} where latest is the last /status body (or null).
 */
export function statusPill(intervalMs = 3000, onStatus = () => {}) {
  const pill = $("#status-pill");
  const state = { latest: null, timer: null, paused: false };
  const poll = async () => {
    if (state.paused) return;
    try {
      const s = await api("status");
      state.latest = s;
      const queue = s.queue_length ? ` | Queue: ${s.queue_length}` : "";
      if (pill) {
        pill.textContent = `Workers: ${s.idle_workers}/${s.total_workers} idle${queue}`;
        pill.className = `pill ${s.idle_workers > 0 ? "ok" : "busy"}`;
      }
      onStatus(s);
    } catch {
      state.latest = null;
      if (pill) {
        pill.textContent = "Offline";
        pill.className = "pill bad";
      }
    }
  };
  poll();
  state.timer = setInterval(poll, intervalMs);
  return {
    get latest() {
      return state.latest;
    },
    refresh: poll,
    stop() {
      clearInterval(state.timer);
    },
  };
}

/** Append a line to a log/conversation panel and keep it scrolled to the end. */
export function logLine(container, text, kind = "system") {
  const line = el("div", { class: `line ${kind}` }, text);
  container.append(line);
  container.scrollTop = container.scrollHeight;
  return line;
}

/** GET /api/frontend_defaults, with the seed's defaults if the call fails. */
export async function frontendDefaults() {
  try {
    return { playback_delay_ms: 200, ...(await api("api/frontend_defaults")) };
  } catch {
    return { playback_delay_ms: 200 };
  }
}

/** Recent sessions kept in this browser only (key and shape from the seed). */
const RECENT_KEY = "minicpmo45_recent_sessions";

export function recentSessions() {
  try {
    const list = JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

export function rememberSession(id, appType) {
  if (!id) return;
  const list = recentSessions().filter((s) => s.id !== id);
  list.unshift({ id, appType, savedAt: Date.now() });
  localStorage.setItem(RECENT_KEY, JSON.stringify(list.slice(0, 20)));
}

export function clearRecentSessions() {
  localStorage.removeItem(RECENT_KEY);
}

/** A session id the gateway accepts: prefix + base-36 time + a little randomness. */
export function newSessionId(prefix) {
  const rand = Math.random().toString(36).slice(2, 6);
  return `${prefix}_${Date.now().toString(36)}${rand}`;
}

/**
 * Settings this browser remembers per page (`scope`): every control marked `data-remember`.
 * Stored values are applied now, over the page's defaults, when the control still accepts them (a
 * number within its min/max, an option the select still has); each change is saved, and so is the
 * whole set when the page is left (presets fill the system prompt without an input event).
 * `reset()` forgets them and puts every control back to its default (`defaultValue`, which a page
 * may set from the server's defaults before). Returns the ids that were restored.
 */
export function rememberSettings(scope, root = document) {
  const key = `omnikube.settings.${scope}`;
  const controls = [...root.querySelectorAll("[data-remember]")];
  const read = (c) => (c.type === "checkbox" ? c.checked : c.value);
  const save = () => {
    try {
      localStorage.setItem(key, JSON.stringify(Object.fromEntries(controls.map((c) => [c.id, read(c)]))));
    } catch {
      // storage full or disabled: settings are simply not remembered
    }
  };
  let stored = {};
  try {
    stored = JSON.parse(localStorage.getItem(key) || "{}") || {};
  } catch {
    stored = {};
  }
  const restored = new Set();
  for (const control of controls) {
    if (!(control.id in stored) || !acceptsValue(control, stored[control.id])) continue;
    if (control.type === "checkbox") control.checked = Boolean(stored[control.id]);
    else control.value = String(stored[control.id]);
    restored.add(control.id);
    control.dispatchEvent(new Event("change"));
  }
  for (const control of controls) {
    control.addEventListener("change", save);
    control.addEventListener("input", save);
  }
  window.addEventListener("pagehide", save);
  const reset = () => {
    for (const control of controls) {
      if (control.type === "checkbox") control.checked = control.defaultChecked;
      else if (control.tagName === "SELECT") {
        for (const option of control.options) option.selected = option.defaultSelected;
      } else control.value = control.defaultValue;
      control.dispatchEvent(new Event("change"));
    }
    localStorage.removeItem(key);
    restored.clear();
  };
  return { restored, reset };
}

function acceptsValue(control, value) {
  if (control.type === "checkbox") return typeof value === "boolean";
  if (typeof value !== "string") return false;
  if (control.tagName === "SELECT") return [...control.options].some((o) => o.value === value);
  if (control.type === "number") {
    const n = Number(value);
    const min = control.min === "" ? -Infinity : Number(control.min);
    const max = control.max === "" ? Infinity : Number(control.max);
    return value !== "" && Number.isFinite(n) && n >= min && n <= max;
  }
  return true;
}
