/**
 * Session viewer (s/{id}): metadata, comment, and the recording: the stitched replay and the chunk
 * timeline for duplex sessions, the turns with their audio for chat and half-duplex sessions.
 */
import { $, api, el, keyedUrl, pageLanguage, sessionAssetUrl } from "./common.js";

const id = decodeURIComponent(location.pathname.split("/s/").pop().replace(/\/$/, ""));

function assetUrl(path) {
  return sessionAssetUrl(id, path);
}

function audio(path) {
  return el("audio", { controls: true, preload: "none", src: assetUrl(path) });
}

function renderInfo(meta, comment) {
  document.title = `${meta.title || id} — Session Viewer`;
  $("#title").textContent = meta.title || id;
  $("#title").dataset.noI18n = ""; // the session's own title or id: data, never translated
  $("#info").replaceChildren(
    el("div", { class: "row" },
      el("span", { class: "badge", "data-no-i18n": true }, meta.app_type ?? "session"),
      el("a", { href: keyedUrl(`api/sessions/${encodeURIComponent(id)}/download`) }, "⬇ Download")),
    el("div", {}, `ID: ${id}`),
    el("div", {}, `Created: ${meta.created_at ? new Date(meta.created_at).toLocaleString() : "—"}`),
    el("div", {}, `Duration: ${meta.duration_s != null ? `${meta.duration_s}s` : "active"}`),
    el("div", {}, `Worker: GPU ${meta.worker_id ?? "?"}`),
    el("details", {}, el("summary", {}, "Config"), el("pre", {}, JSON.stringify(meta.config ?? {}, null, 2))));
  if (comment) $("#info").append(el("p", {}, `Comment: ${comment}`));
}

/** A browser's MediaRecorder writes WebM without its length: seeking past the end once makes the
 * element find it (the bar then shows the real duration), then it goes back to the start. */
function knowDuration(media) {
  media.addEventListener("loadedmetadata", () => {
    if (media.duration !== Infinity) return;
    media.addEventListener("durationchange", () => (media.currentTime = 0), { once: true });
    media.currentTime = 1e101;
  }, { once: true });
}

/** The browser's own recording, uploaded with Share: the first of these that exists. */
async function frontendRecording() {
  for (const name of ["frontend_replay.webm", "frontend_replay.mp4", "frontend_replay.wav"]) {
    const response = await fetch(assetUrl(name), { method: "HEAD" }).catch(() => null);
    if (response?.ok) {
      const media = name.endsWith(".wav") ? audio(name)
        : el("video", { id: "frontend-replay", controls: true, preload: "metadata", src: assetUrl(name), class: "camera" });
      if (name.endsWith(".webm")) knowDuration(media);
      return [el("h2", {}, "Frontend recording (uploaded by the user)"),
        el("div", { class: "muted" }, "Recorded in the browser: L = user, R = AI"), media];
    }
  }
  return [];
}

function renderDuplex(rec) {
  const parts = [el("h2", {}, "Replay")];
  let replay = null;
  if (rec.merged_replay_video) replay = el("video", { id: "replay", controls: true, src: assetUrl(rec.merged_replay_video), class: "camera" });
  else if (rec.merged_replay) {
    replay = el("audio", { id: "replay", controls: true, preload: "metadata", src: assetUrl(rec.merged_replay) });
    parts.push(el("div", { class: "muted" }, "Stereo: L = user, R = AI"));
  }
  parts.push(replay ?? el("p", { class: "muted" }, "Replay not available"));
  parts.push(el("h2", {}, "Timeline"));
  const seek = (c) => {
    replay.currentTime = c.replay_offset_s;
    replay.play().catch(() => {});
  };
  const rows = (rec.chunks ?? []).map((c) =>
    el("tr", {},
      el("td", {}, replay && c.replay_offset_s != null
        ? el("button", { type: "button", class: "seek", title: "Play the replay from this chunk", onclick: () => seek(c) }, `▶ ${c.index}`)
        : String(c.index)),
      el("td", {}, c.user_frame ? el("img", { class: "thumb", src: assetUrl(c.user_frame), alt: `frame ${c.index}`, loading: "lazy" }) : "",
        c.user_audio ? audio(c.user_audio) : "—"),
      el("td", { "data-no-i18n": true }, el("span", { class: `badge ${c.result?.mode === "SPEAK" ? "busy" : ""}` }, c.result?.mode ?? "?"),
        " ", c.result?.text ?? "", c.result?.end_of_turn ? " ⏎" : ""), // the model's words
      el("td", {}, c.result?.ai_audio ? audio(c.result.ai_audio) : "")));
  parts.push(el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "User"), el("th", {}, "Model"), el("th", {}, "AI audio"))),
    el("tbody", {}, ...rows)));
  return parts;
}

function renderTurns(rec) {
  const turns = rec.turns ?? [];
  if (!turns.length) return [el("p", { class: "muted" }, "No turns recorded")];
  return [el("div", { class: "messages", style: "max-height: none" }, ...turns.flatMap((t) => [
    el("div", { class: "msg user" }, t.input?.text ?? "(voice)", t.input?.audio ? audio(t.input.audio) : null,
      ...(t.input?.images ?? []).map((p) => el("img", { src: assetUrl(p), alt: p }))),
    el("div", { class: "msg assistant" }, t.output?.text ?? "", t.output?.audio ? audio(t.output.audio) : null,
      el("div", { class: "meta" }, `${Math.round(t.timing?.elapsed_ms ?? 0)}ms · ${t.timing?.tokens ?? "?"} tokens`)),
  ]))];
}

async function main() {
  let meta;
  try {
    meta = await api(`api/sessions/${encodeURIComponent(id)}`);
  } catch (error) {
    $("#title").textContent = `Session not found: ${id} (${error.status ?? error.message})`;
    $("#info").hidden = true;
    return;
  }
  const comment = await api(`api/sessions/${encodeURIComponent(id)}/comment`).then((c) => c.comment).catch(() => "");
  renderInfo(meta, comment);
  try {
    const rec = await api(`api/sessions/${encodeURIComponent(id)}/recording`);
    $("#content").replaceChildren(...(rec.mode === "duplex" ? renderDuplex(rec) : renderTurns(rec)));
  } catch {
    $("#content").replaceChildren(el("p", { class: "muted" }, "Recording data not available (session may still be active)"));
  }
  $("#content").prepend(...(await frontendRecording()));
}

pageLanguage();
main();
