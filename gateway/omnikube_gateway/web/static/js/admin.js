/**
 * Admin dashboard (/admin): workers, queue, ETA settings, apps, recent sessions with playback.
 *
 * Polls /status, /workers and /api/queue every 2 s (ETA settings every 30 s, apps and sessions on
 * demand). Every failure is shown on the page.
 */
import { $, api, buildNav, el, recentSessions, sessionAssetUrl } from "./common.js";
import { formatSeconds } from "./queue.js";

const POLL_MS = 2000;
const ETA_FIELDS = [
  ["eta_chat_s", "Chat (s)"],
  ["eta_streaming_s", "Chat socket (s)"],
  ["eta_half_duplex_s", "Half duplex (s)"],
  ["eta_audio_duplex_s", "Audio duplex (s)"],
  ["eta_omni_duplex_s", "Omni duplex (s)"],
  ["ema_alpha", "EMA α (0–1)"],
];

const view = { status: null, workers: [], queue: null, fetchedAt: 0 };
window.omnikube = { view };

function showError(where, error) {
  $("#admin-error").textContent = error ? `${where}: ${error.message}` : "";
}

function badgeClass(state) {
  if (state === "idle") return "idle";
  if (state === "duplex_paused") return "paused";
  if (["offline", "error", "loading", "unhealthy", "draining"].includes(state)) return "bad";
  return "busy";
}

function sinceFetch() {
  return (Date.now() - view.fetchedAt) / 1000;
}

// ---------------------------------------------------------------- polling

async function poll() {
  try {
    const [status, workers, queue] = await Promise.all([api("status"), api("workers"), api("api/queue")]);
    Object.assign(view, { status, workers: workers.workers ?? [], queue, fetchedAt: Date.now() });
    showError();
    render();
    $("#refreshed").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    showError("Refresh failed", error);
    $("#refreshed").textContent = "Offline";
  }
}

function render() {
  renderTiles();
  renderWorkers();
  renderQueue();
}

function renderTiles() {
  const s = view.status;
  if (!s) return;
  const tiles = [
    ["Workers", s.total_workers],
    ["Idle", s.idle_workers],
    ["Busy", s.busy_workers],
    ["Queue", s.queue_length],
  ];
  $("#tiles").replaceChildren(...tiles.map(([k, v]) => el("div", { class: "tile", dataset: { tile: k.toLowerCase() } }, k, el("b", {}, String(v ?? "—")))));
}

function runningTask(workerId) {
  return (view.queue?.running_tasks ?? []).find((t) => t.worker_id === workerId);
}

function renderWorkers() {
  const rows = view.workers.map((w) => {
    const task = runningTask(w.worker_id);
    const elapsed = task ? task.elapsed_s + sinceFetch() : null;
    const remaining = task?.estimated_remaining_s != null ? Math.max(0, task.estimated_remaining_s - sinceFetch()) : null;
    return el("tr", { dataset: { worker: w.worker_id, state: w.status } },
      // What the workers report (names, addresses, states, sessions, task types) is data: never translated.
      el("td", { "data-no-i18n": true }, w.worker_id),
      el("td", { class: "muted", "data-no-i18n": true }, w.host ? `${w.host}:${w.port}` : ""),
      el("td", { "data-no-i18n": true }, el("span", { class: `badge ${badgeClass(w.status)}` }, w.status)),
      el("td", { "data-no-i18n": true }, w.current_session_id ?? "—"),
      el("td", { "data-no-i18n": true }, w.current_request_type ?? task?.request_type ?? "—"),
      el("td", {}, elapsed == null ? "—" : `${formatSeconds(elapsed)}${remaining != null ? ` (~${formatSeconds(remaining)} left)` : ""}`),
      el("td", {}, String(w.total_requests ?? 0)));
  });
  $("#workers tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No workers"))]));
}

function renderQueue() {
  const items = view.queue?.items ?? [];
  const rows = items.map((item) => {
    const eta = Math.max(0, (item.estimated_wait_s ?? 0) - sinceFetch());
    return el("tr", { dataset: { ticket: item.ticket_id, position: item.position } },
      el("td", {}, `#${item.position}`),
      el("td", { "data-no-i18n": true }, item.request_type),
      el("td", { "data-no-i18n": true }, item.session_id ?? "—"),
      el("td", {}, `~${formatSeconds(eta)}`),
      el("td", {}, formatSeconds((item.wait_elapsed_s ?? 0) + sinceFetch())),
      el("td", { class: "muted", "data-no-i18n": true }, item.ticket_id),
      el("td", {}, el("button", { type: "button", class: "danger", onclick: () => cancelTicket(item.ticket_id) }, "Cancel")));
  });
  $("#queue tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "Queue empty"))]));
}

async function cancelTicket(ticketId) {
  if (!confirm(`Cancel ticket ${ticketId}?`)) return;
  try {
    const result = await api(`api/queue/${encodeURIComponent(ticketId)}`, { method: "DELETE" });
    if (result && result.success === false) showError("Cancel", new Error(`${ticketId} was no longer waiting`));
  } catch (error) {
    showError("Cancel failed", error);
  }
  poll();
}

// ---------------------------------------------------------------- ETA settings

function buildEtaForm() {
  $("#eta-fields").replaceChildren(...ETA_FIELDS.map(([name, label]) =>
    el("label", { class: "inline" }, label,
      el("input", { type: "number", name, step: name === "ema_alpha" ? "0.05" : "1", min: "0", max: name === "ema_alpha" ? "1" : undefined }))));
}

async function loadEta() {
  try {
    const eta = await api("api/config/eta");
    const form = $("#eta-form");
    for (const [name] of ETA_FIELDS) {
      const value = name === "ema_alpha" ? eta.config?.ema_alpha ?? eta.ema_alpha : eta.config?.[name];
      if (document.activeElement !== form.elements[name]) form.elements[name].value = value ?? "";
    }
    const parts = ["chat", "streaming", "half_duplex", "audio_duplex", "omni_duplex"].map((t) => {
      const value = eta[`ema_${t}_s`];
      const n = eta[`ema_${t}_samples`] ?? 0;
      return value == null ? null : `${t}: ${Number(value).toFixed(1)}s (${n} samples)`;
    }).filter(Boolean);
    $("#eta-ema").textContent = parts.length ? `EMA ${parts.join(" | ")}` : "No EMA data yet";
  } catch (error) {
    $("#eta-status").textContent = `Cannot read ETA settings: ${error.message}`;
  }
}

$("#eta-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = {};
  for (const [name] of ETA_FIELDS) {
    const raw = form.elements[name].value;
    if (raw === "") continue;
    body[name] = Number(raw);
  }
  try {
    await api("api/config/eta", { method: "PUT", body });
    $("#eta-status").textContent = `Saved at ${new Date().toLocaleTimeString()}`;
    await loadEta();
    poll();
  } catch (error) {
    $("#eta-status").textContent = `Save failed: ${error.message}`;
  }
});

// ---------------------------------------------------------------- apps

async function loadApps() {
  try {
    const { apps } = await api("api/admin/apps");
    $("#apps tbody").replaceChildren(...apps.map((app) =>
      el("tr", {},
        el("td", {}, el("input", { type: "checkbox", checked: app.enabled, "aria-label": `Enable ${app.name}`,
          onchange: (e) => toggleApp(app.app_id, e.target.checked) })),
        el("td", {}, app.name), el("td", { class: "muted", "data-no-i18n": true }, app.route),
        el("td", {}, el("span", { class: `badge ${app.enabled ? "idle" : "bad"}` }, app.enabled ? "Enabled" : "Disabled")))));
  } catch (error) {
    $("#apps tbody").replaceChildren(el("tr", {}, el("td", { class: "muted" }, `Apps not available: ${error.message}`)));
  }
}

async function toggleApp(appId, enabled) {
  try {
    await api(`api/admin/apps/${encodeURIComponent(appId)}`, { method: "PUT", body: { enabled } });
  } catch (error) {
    showError("Toggle failed", error);
  }
  loadApps();
}

// ---------------------------------------------------------------- sessions and playback

async function loadSessions() {
  let sessions;
  try {
    const listed = await api("api/sessions?limit=20");
    sessions = listed.sessions ?? listed;
    $("#sessions-source").textContent = "from the server";
  } catch {
    // No server listing: this browser's own recent sessions.
    sessions = recentSessions().map((s) => ({ session_id: s.id, app_type: s.appType, created_at: new Date(s.savedAt).toISOString() }));
    $("#sessions-source").textContent = "recent sessions of this browser (the server offers no listing)";
  }
  $("#sessions tbody").replaceChildren(...(sessions.length ? sessions.map((s) =>
    el("tr", { dataset: { session: s.session_id } },
      el("td", { "data-no-i18n": true }, el("a", { href: `s/${encodeURIComponent(s.session_id)}`, target: "_blank" }, s.session_id)),
      el("td", { "data-no-i18n": true }, s.app_type ?? "—"),
      el("td", { class: "muted" }, s.created_at ? new Date(s.created_at).toLocaleString() : "—"),
      el("td", {}, s.duration_s != null ? `${s.duration_s}s` : "—"),
      el("td", {}, el("button", { type: "button", onclick: () => showRecording(s.session_id) }, "▶ Play")))) :
    [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No sessions yet"))]));
}

async function showRecording(id) {
  const box = $("#playback");
  box.hidden = false;
  box.replaceChildren(el("div", { class: "muted" }, `Loading ${id}…`));
  try {
    const rec = await api(`api/sessions/${encodeURIComponent(id)}/recording`);
    const parts = [el("h2", {}, `Recording ${id}`)];
    if (rec.mode === "duplex") {
      if (rec.merged_replay) parts.push(el("div", {}, "Stereo: L = user, R = AI"), el("audio", { controls: true, src: sessionAssetUrl(id, rec.merged_replay) }));
      const spoken = (rec.chunks ?? []).filter((c) => c.result?.text).map((c) => c.result.text).join("");
      parts.push(el("p", {}, `${rec.chunks?.length ?? 0} chunks. AI said: ${spoken || "(nothing)"}`));
    } else {
      for (const turn of rec.turns ?? []) {
        parts.push(el("div", { class: "msg user" }, turn.input?.text ?? "(voice)",
          turn.input?.audio ? el("audio", { controls: true, src: sessionAssetUrl(id, turn.input.audio) }) : null));
        parts.push(el("div", { class: "msg assistant" }, turn.output?.text ?? "",
          turn.output?.audio ? el("audio", { controls: true, src: sessionAssetUrl(id, turn.output.audio) }) : null));
      }
      if (!rec.turns?.length) parts.push(el("p", { class: "muted" }, "No turns recorded"));
    }
    box.replaceChildren(...parts);
  } catch (error) {
    box.replaceChildren(el("p", { class: "error" }, `Recording not available (${error.message}); the session may still be active.`));
  }
}

$("#session-open").addEventListener("click", () => {
  const id = $("#session-lookup").value.trim();
  if (id) showRecording(id);
});

// ---------------------------------------------------------------- reference audio library

async function loadRefAudio() {
  try {
    const { ref_audios: list = [] } = await api("api/assets/ref_audio");
    $("#ref-audio tbody").replaceChildren(...(list.length ? list.map((r) =>
      el("tr", {},
        el("td", { "data-no-i18n": true }, r.name), el("td", { class: "muted", "data-no-i18n": true }, r.source_type ?? ""),
        el("td", {}, `${((r.duration_ms ?? 0) / 1000).toFixed(1)}s`),
        el("td", { class: "muted" }, r.created_at ?? ""),
        el("td", {}, el("button", { type: "button", class: "danger", onclick: () => deleteRef(r) }, "Delete")))) :
      [el("tr", {}, el("td", { class: "muted" }, "No uploaded reference audio"))]));
  } catch (error) {
    $("#ref-audio tbody").replaceChildren(el("tr", {}, el("td", { class: "muted" }, `Not available: ${error.message}`)));
  }
}

async function deleteRef(ref) {
  if (!confirm(`Delete reference audio "${ref.name}"?`)) return;
  try {
    await api(`api/assets/ref_audio/${encodeURIComponent(ref.id)}`, { method: "DELETE" });
  } catch (error) {
    showError("Delete failed", error);
  }
  loadRefAudio();
}

// ---------------------------------------------------------------- start

buildNav("admin");
buildEtaForm();
poll();
loadEta();
loadApps();
loadSessions();
loadRefAudio();
setInterval(poll, POLL_MS);
setInterval(loadEta, 30000);
setInterval(() => {
  loadSessions();
  loadRefAudio();
}, 15000);
