/**
 * Full-duplex sessions: /audio_duplex (voice) and /omni (voice + camera), one page for both: the
 * last segment of the URL says which; everything else is shared.
 *
 * Session flow over ws/duplex/{session_id} (ids `adx_…` = audio, `omni_…` = omni):
 *   [queued, queue_update*] → queue_done → (client) prepare → prepared → audio_chunk every second
 *   (omni adds one JPEG frame) → result per chunk; pause/paused, resume/resumed; stop/stopped.
 * The client sends `prepare` on queue_done, or 100 ms after opening when nothing came (the
 * gateway holds early frames until a worker is assigned).
 * Speech from `result.audio_data` (24 kHz float32) plays as it arrives on a gapless timeline.
 */
import { $, api, buildNav, el, frontendDefaults, logClose, logLine, newSessionId, rememberSession, rememberSettings, statusPill,
  wsUrl } from "./common.js";
import { FileCapture, MicCapture, StreamPlayer, decodeToMono16k } from "./audio.js";
import { base64ToFloat32, float32ToBase64 } from "./pcm.js";
import { QueuePanel } from "./queue-view.js";
import { ShareButton } from "./share.js";
import { devicePicker } from "./devices.js";
import { faqPanel } from "./faq.js";
import { localStamp } from "./export.js";
import { callRecording } from "./recorder.js";
import { videoCallRecording } from "./video-recorder.js";
import { VoicePicker } from "./voice.js";

const OMNI = /\/omni\/?$/.test(location.pathname);
const MODE = OMNI ? "omni" : "audio_duplex";
const PREFIX = OMNI ? "omni" : "adx"; // the gateway picks the mode by this id prefix
const TITLE = OMNI ? "Omni Full-Duplex" : "Audio Full-Duplex";

document.title = `${TITLE} – MiniCPM-o 4.5`;
$("#heading").textContent = TITLE;
for (const node of document.querySelectorAll(".omni-only")) node.hidden = !OMNI;
const PREPARE_GRACE_MS = 100;
const STOP_GRACE_MS = 2000;

const log = $("#log");
const player = new StreamPlayer();
const voice = new VoicePicker($("#voice"), {
  mode: MODE,
  label: "LLM voice (the system prompt's reference audio)",
  onPreset: (preset) => {
    if (preset.system_prompt) $("#system-prompt").value = preset.system_prompt;
  },
});
const ttsVoice = new VoicePicker($("#tts-voice"), { mode: MODE, label: "TTS voice (voice cloning)", sameAs: "the LLM voice" });
const share = new ShareButton($("#share"), OMNI ? "omni_duplex" : "audio_duplex");
const queue = new QueuePanel($("#queue"), { onLeave: () => stop(), player });
statusPill(10000);

const freshTiming = () => ({ sentAt: [], latencyMs: null, ttfsMs: null, driftMs: null, firstDelayMs: null, lastListenAt: null });

const session = {
  state: "stopped", // connecting | queued | preparing | active | pausing | paused | stopping | stopped
  id: null,
  recordingId: null,
  ws: null,
  capture: null,
  prepareSent: false,
  prepareTimer: null,
  startedAt: null,
  chunksSent: 0,
  results: 0,
  speaking: false,
  aiLine: null,
  last: {},
  timing: freshTiming(),
  input: null, // File mode: {file, samples}
};
let camera = null;

// For the browser tests and for curious users: the live objects of this page.
window.omnikube = { session, player, queue, voice, ttsVoice };

// The demo's per-mode defaults: voice calls run longer (length penalty 1.05, a context up to 128k
// tokens); omni keeps 1.1 and 8192, since frames fill the context fast.
if (!OMNI) {
  $("#opt-length-penalty").value = $("#opt-length-penalty").defaultValue = "1.05";
  $("#opt-max-kv").max = "131072";
}

$("#opt-delay").addEventListener("change", () => (player.delayMs = $("#opt-delay").value));
if (OMNI) $("#opt-rec").parentElement.title = "Record this call in the browser: a video of the picture with the subtitles, left your microphone, right the model";
// The omni page records the call as a video (its format panel is filled before settings are restored).
const callRec = OMNI
  ? videoCallRecording({ checkbox: $("#opt-rec"), button: $("#download-rec"), player, video: $("#camera"),
    fileName: (ext) => `session_${localStamp()}.${ext}`, drawPicture, subtitles: () => $("#subtitles").textContent,
    format: $("#opt-rec-format"), bitrate: $("#opt-rec-bitrate"), burnIn: $("#opt-rec-subtitles") })
  : callRecording({ checkbox: $("#opt-rec"), button: $("#download-rec"), player,
    fileName: () => `session_${localStamp()}.wav` });
// Remembered per mode: the two pages start from different defaults.
const settings = rememberSettings(MODE);
share.setRecording(() => callRec.blob());
const devices = devicePicker($("#devices"), player, OMNI ? ["audioinput", "audiooutput", "videoinput"] : undefined);
$("#reset-settings").addEventListener("click", () => settings.reset());
frontendDefaults().then((d) => {
  // The server's delay is this page's default: what Reset returns to, and the value unless remembered.
  $("#opt-delay").defaultValue = d.playback_delay_ms;
  if (!settings.restored.has("opt-delay")) $("#opt-delay").value = d.playback_delay_ms;
  player.delayMs = $("#opt-delay").value;
});
buildNav(MODE);
faqPanel(OMNI ? "omni" : "audio-duplex");

// ---------------------------------------------------------------- UI state

const LAMP = {
  connecting: ["Connecting…", ""],
  queued: ["Queued", "queued"],
  preparing: ["Preparing…", ""],
  active: ["LIVE", "live"],
  pausing: ["Pausing…", "paused"],
  paused: ["Paused", "paused"],
  stopping: ["Stopping…", ""],
  stopped: ["Stopped", ""],
};

function setState(next) {
  session.state = next;
  document.body.dataset.session = next;
  const [text, cls] = LAMP[next];
  const lamp = $("#lamp");
  lamp.textContent = text;
  lamp.className = `lamp ${cls}`;
  const running = next !== "stopped";
  $("#start").disabled = running;
  $("#start").textContent = next === "queued" ? "Queued" : next === "preparing" ? "Preparing…" : "Start";
  $("#stop").disabled = !running || next === "stopping";
  $("#stop").textContent = next === "queued" || next === "connecting" ? "Cancel" : "Stop";
  $("#pause").disabled = !["active", "paused"].includes(next);
  $("#pause").textContent = next === "paused" || next === "pausing" ? "Resume" : "Pause";
  renderMetrics();
}

// The demo's colour bands: [good below, fair below]; above is poor. Ahead is the other way round.
const BANDS = { latency: [200, 500], ttfs: [300, 600], drift: [50, 200], kv: [4096, 6144], gaps: [1, 3] };

function level(name, value) {
  if (value == null || !Number.isFinite(value)) return undefined;
  if (name === "ahead") return value > 200 ? "good" : value > 50 ? "fair" : "poor";
  const [good, fair] = BANDS[name];
  return value < good ? "good" : value < fair ? "fair" : "poor";
}

const ms = (value) => (value == null ? "—" : `${Math.round(value)} ms`);

function renderMetrics() {
  const r = session.last;
  const t = session.timing;
  const gaps = player.schedule.gaps;
  const vision = r.vision_slices ? `${r.vision_slices > 1 ? `HD(${r.vision_slices})` : "Std"} · ${r.vision_tokens ?? 0} tok` : "—";
  const items = [
    ["State", session.state],
    ["SID", session.id ? session.id.slice(0, 12) : "—"],
    ["Model", session.results ? (session.speaking ? "Speaking" : "Listening") : "—"],
    ["Chunks", session.chunksSent],
    ["KV", r.kv_cache_length ?? "—", level("kv", r.kv_cache_length)],
    ...(OMNI ? [["Vision", vision]] : []),
    ["Infer", r.wall_clock_ms != null ? `${Math.round(r.wall_clock_ms)} ms (${Math.round(r.cost_all_ms ?? r.wall_clock_ms)})` : "—"],
    ["Latency", ms(t.latencyMs), level("latency", t.latencyMs)],
    ["TTFS", ms(t.ttfsMs), level("ttfs", t.ttfsMs)],
    ["Drift", t.driftMs == null ? "—" : `${t.driftMs >= 0 ? "+" : ""}${Math.round(t.driftMs)} ms`, level("drift", Math.abs(t.driftMs))],
    ["Ahead", `${player.aheadMs} ms${gaps ? ` ⚠${gaps}` : ""}`, gaps ? level("gaps", gaps) : level("ahead", player.aheadMs)],
  ];
  $("#metrics").replaceChildren(...items.map(([k, v, quality]) =>
    el("div", { dataset: { metric: k.toLowerCase(), level: quality } }, k, el("b", {}, String(v)))));
}

/** Per result: the round trip of its chunk, the server-to-browser delay's change since the first
 * result (the clocks' offset cancels out), and TTFS, the time from the last listening result to
 * the first speaking one. */
function timeResult(r) {
  const now = performance.now();
  const t = session.timing;
  const sentAt = t.sentAt.shift();
  if (sentAt != null) t.latencyMs = now - sentAt;
  if (r.server_send_ts) {
    const delay = Date.now() - r.server_send_ts * 1000;
    t.firstDelayMs ??= delay;
    t.driftMs = delay - t.firstDelayMs;
  }
  if (r.is_listen) t.lastListenAt = now;
  else if (!session.speaking && t.lastListenAt != null) t.ttfsMs = now - t.lastListenAt;
}

setInterval(() => {
  if (session.startedAt && session.state !== "stopped") {
    const s = Math.floor((Date.now() - session.startedAt) / 1000);
    $("#timer").textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }
  renderMetrics();
}, 1000);

function drawWave() {
  const canvas = $("#wave");
  const g = canvas.getContext("2d");
  const analyser = session.capture?.analyser;
  g.clearRect(0, 0, canvas.width, canvas.height);
  if (analyser) {
    const data = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(data);
    g.beginPath();
    for (let i = 0; i < data.length; i++) {
      const x = (i / data.length) * canvas.width;
      const y = canvas.height / 2 - data[i] * canvas.height;
      if (i) g.lineTo(x, y);
      else g.moveTo(x, y);
    }
    g.strokeStyle = session.state === "active" ? "#15803d" : "#888";
    g.stroke();
  }
  requestAnimationFrame(drawWave);
}
requestAnimationFrame(drawWave);

// ---------------------------------------------------------------- camera (omni)

let facing = "user";

async function openCamera() {
  if (!OMNI || camera) return;
  try {
    const chosen = devices.deviceId("videoinput");
    camera = await navigator.mediaDevices.getUserMedia({ video: chosen ? { deviceId: { exact: chosen } } : { facingMode: facing } });
    $("#camera").srcObject = camera;
  } catch (error) {
    logLine(log, `Error: camera unavailable (${error.message}); HTTPS is needed for camera access.`, "error");
  }
}

/** The other camera of a phone or tablet: front <-> back (a chosen camera gives way to it). */
async function flipCamera() {
  facing = facing === "user" ? "environment" : "user";
  const chosen = $("#device-videoinput");
  if (chosen) chosen.value = "";
  devices.choose("videoinput", "");
  camera?.getTracks().forEach((track) => track.stop());
  camera = null;
  await openCamera();
}

/** The model's words over the picture, while it speaks and a moment after. */
function subtitle(text) {
  clearTimeout(subtitle.timer);
  $("#subtitles").textContent = $("#opt-subtitles").checked ? text : "";
  if (!text) return;
  if (!session.speaking) subtitle.timer = setTimeout(() => ($("#subtitles").textContent = ""), 2500);
}

/** One still frame, scaled to the chosen width (bandwidth), as JPEG base64. */
function grabFrame() {
  const video = $("#camera");
  if (!video || !video.videoWidth) return null;
  const width = Math.min(Number($("#opt-frame-width").value) || 480, video.videoWidth);
  const height = Math.round((video.videoHeight * width) / video.videoWidth);
  const canvas = grabFrame.canvas ?? (grabFrame.canvas = document.createElement("canvas"));
  canvas.width = width;
  canvas.height = height;
  drawPicture(canvas.getContext("2d"), video, width, height);
  return canvas.toDataURL("image/jpeg", 0.7).split(",", 2)[1];
}

/** The picture as the model sees it (mirrored when Mirror is on), also what the recording shows. */
function drawPicture(g, video, width, height) {
  g.save();
  if ($("#opt-mirror").checked) {
    g.translate(width, 0);
    g.scale(-1, 1);
  }
  g.drawImage(video, 0, 0, width, height);
  g.restore();
}

// ---------------------------------------------------------------- session

function send(message) {
  if (session.ws?.readyState === WebSocket.OPEN) session.ws.send(JSON.stringify(message));
}

/** File mode: the chosen file's 16 kHz samples (and the file, to show a video), read before connecting. */
async function readInputFile() {
  if ($("#opt-source").value !== "file") return null;
  const file = $("#source-file").files[0];
  if (!file) throw new Error("choose an audio or video file for File input");
  try {
    return { file, samples: await decodeToMono16k(await file.arrayBuffer()) };
  } catch (error) {
    throw new Error(`cannot read ${file.name} as audio (${error.message})`);
  }
}

/** The omni page's picture: the input video file while it plays, else the camera. */
function showVideo(file) {
  const video = $("#camera");
  if (video.src) URL.revokeObjectURL(video.src);
  if (file) {
    video.srcObject = null;
    video.src = URL.createObjectURL(file);
    video.play().catch(() => {});
  } else {
    video.removeAttribute("src");
    video.srcObject = camera;
  }
}

async function start() {
  if (session.state !== "stopped") return;
  try {
    session.input = await readInputFile();
  } catch (error) {
    logLine(log, `Error: ${error.message}`, "error");
    return;
  }
  // Wake the audio output first, while the click still counts as a user gesture.
  await player.ensureStarted();
  await Promise.all([voice.ready, ttsVoice.ready]);
  player.delayMs = $("#opt-delay").value;
  Object.assign(session, {
    id: newSessionId(PREFIX), recordingId: null, prepareSent: false, chunksSent: 0, results: 0,
    speaking: false, aiLine: null, last: {}, startedAt: null, timing: freshTiming(),
  });
  $("#session-id").textContent = session.id;
  $("#timer").textContent = "";
  setState("connecting");
  const ws = new WebSocket(wsUrl(`ws/duplex/${encodeURIComponent(session.id)}`));
  session.ws = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    session.prepareTimer = setTimeout(() => {
      if (session.state === "connecting") sendPrepare();
    }, PREPARE_GRACE_MS);
  };
  ws.onmessage = (event) => {
    if (ws !== session.ws) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      logLine(log, "Error: the server sent a frame that is not JSON", "error");
      return;
    }
    onFrame(frame);
  };
  ws.onclose = (event) => {
    if (ws !== session.ws) return;
    if (session.state !== "stopping") logClose(log, event, opened);
    teardown();
  };
}

function sendPrepare() {
  if (session.prepareSent) return;
  session.prepareSent = true;
  clearTimeout(session.prepareTimer);
  const message = {
    type: "prepare",
    system_prompt: $("#system-prompt").value.trim() || "You are a helpful assistant.",
    config: { length_penalty: Number($("#opt-length-penalty").value) || 1.1 },
  };
  if (voice.value) message.ref_audio_base64 = voice.value;
  // Sent only when it differs: the worker speaks with the LLM's voice otherwise.
  if (ttsVoice.value && ttsVoice.value !== voice.value) message.tts_ref_audio_base64 = ttsVoice.value;
  if (OMNI) message.max_slice_nums = $("#opt-hd").checked ? 2 : 1;
  send(message);
  if (session.state === "connecting") setState("preparing");
}

function onFrame(frame) {
  switch (frame.type) {
    case "queued":
      clearTimeout(session.prepareTimer);
      logLine(log, `Queued ${frame.position}/${frame.queue_length ?? "?"}, about ~${Math.round(frame.estimated_wait_s ?? 0)}s`);
    // falls through
    case "queue_update":
      queue.update(frame);
      setState("queued");
      break;
    case "queue_done":
      queue.served();
      setState("preparing");
      sendPrepare();
      break;
    case "prepared":
      onPrepared(frame);
      break;
    case "result":
      onResult(frame);
      break;
    case "paused":
      callRec.pause?.();
      setState("paused");
      logLine(log, "Paused");
      break;
    case "resumed":
      if (session.capture) session.capture.paused = false;
      callRec.resume?.();
      setState("active");
      logLine(log, "Resumed");
      break;
    case "stopped":
      logLine(log, "Session stopped");
      teardown();
      break;
    case "timeout":
      logLine(log, `Timeout: ${frame.reason ?? "session ended by the server"}`, "error");
      teardown();
      break;
    case "error":
      if (session.state === "paused" && /paused/i.test(frame.error ?? "")) break;
      logLine(log, `Error: ${frame.error}`, "error");
      if (["connecting", "queued"].includes(session.state)) teardown();
      break;
    default:
      break;
  }
}

async function onPrepared(frame) {
  queue.done();
  session.recordingId = frame.recording_session_id ?? null;
  if (session.recordingId) {
    rememberSession(session.recordingId, OMNI ? "omni_duplex" : "audio_duplex");
    share.setSession(session.recordingId);
    const link = el("a", { href: `s/${encodeURIComponent(session.recordingId)}`, target: "_blank" }, "recording");
    logLine(log, "").append(`Prepared (${frame.prompt_length ?? "?"} tokens) — `, link);
  } else {
    logLine(log, `Prepared (${frame.prompt_length ?? "?"} tokens)`);
  }
  const input = session.input;
  if (input) {
    session.capture = new FileCapture({ samples: input.samples, chunkSize: 16000, onChunk: sendChunk,
      onEnd: () => logLine(log, `${input.file.name} ended; the model hears silence now`) });
    if (OMNI && input.file.type.startsWith("video/")) showVideo(input.file);
  } else {
    if (OMNI) await openCamera();
    session.capture = new MicCapture({ chunkSize: 16000, onChunk: sendChunk, deviceId: devices.deviceId("audioinput") });
  }
  try {
    await session.capture.start();
  } catch (error) {
    logLine(log, `Error: ${error.message}`, "error");
    stop();
    return;
  }
  session.startedAt = Date.now();
  callRec.start(input ? { samples: input.samples } : { stream: session.capture.stream });
  setState("active");
  logLine(log, "Session active — speak now");
}

function sendChunk(samples) {
  if (session.state !== "active" && session.state !== "stopping") return;
  const message = { type: "audio_chunk", audio_base64: float32ToBase64(samples) };
  if ($("#opt-force-listen").checked) message.force_listen = true;
  if (OMNI) {
    const frame = grabFrame();
    if (frame) message.frame_base64_list = [frame];
    if ($("#opt-hd").checked) message.max_slice_nums = 2;
  }
  send(message);
  callRec.microphone(samples);
  session.timing.sentAt.push(performance.now());
  session.chunksSent += 1;
}

function onResult(r) {
  timeResult(r);
  session.results += 1;
  session.last = r;
  if (!r.is_listen) {
    session.speaking = true;
    if (r.audio_data) player.push(base64ToFloat32(r.audio_data));
    if (r.text) {
      if (!session.aiLine) session.aiLine = logLine(log, "AI: ", "ai");
      session.aiLine.textContent += r.text;
      if (OMNI) subtitle(session.aiLine.textContent.replace(/^AI: /, ""));
    }
    if (r.end_of_turn) endAiTurn();
  } else {
    if (session.speaking) endAiTurn();
    if (r.text) logLine(log, `You: ${r.text}`, "user");
  }
  const maxKv = Number($("#opt-max-kv").value) || 8192;
  if (r.kv_cache_length >= maxKv) {
    logLine(log, `⚠ KV cache (${r.kv_cache_length}) reached limit. Auto-stopping.`, "error");
    stop();
  }
}

function endAiTurn() {
  session.speaking = false;
  if (OMNI && session.aiLine) subtitle(session.aiLine.textContent.replace(/^AI: /, "")); // fades out
  session.aiLine = null;
  player.endTurn();
  logLine(log, "— end of turn —");
}

function togglePause() {
  if (session.state === "active") {
    if (session.capture) session.capture.paused = true; // nothing is sent while paused
    send({ type: "pause" });
    setState("pausing");
  } else if (session.state === "paused") {
    send({ type: "resume" });
    setState("pausing"); // until `resumed`; reuses the "in between" lamp
    $("#lamp").textContent = "Resuming…";
  }
}

async function stop() {
  const ws = session.ws;
  if (!ws || session.state === "stopped" || session.state === "stopping") return;
  if (["connecting", "queued", "preparing"].includes(session.state) && !session.capture) {
    // Leaving the queue: the gateway frees the place when the socket closes; DELETE makes it instant.
    if (queue.ticketId) api(`api/queue/${encodeURIComponent(queue.ticketId)}`, { method: "DELETE" }).catch(() => {});
    logLine(log, session.state === "queued" ? "Left the queue" : "Cancelled");
    setState("stopping");
    ws.close(1000, "client left");
    teardown();
    return;
  }
  setState("stopping");
  if (session.capture) await session.capture.stop({ flush: true }); // the last words still go out
  send({ type: "stop" });
  setTimeout(() => {
    if (session.ws === ws && session.state !== "stopped") {
      ws.close(1000, "client stopped");
      teardown();
    }
  }, STOP_GRACE_MS);
}

function teardown() {
  clearTimeout(session.prepareTimer);
  queue.done();
  const { ws, capture } = session;
  session.ws = null;
  session.capture = null;
  capture?.stop({ flush: false });
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
  player.flush();
  callRec.stop();
  if (OMNI && session.input) showVideo(null);
  setState("stopped");
}

$("#flip").addEventListener("click", () => flipCamera());
$("#fullscreen").addEventListener("click", () => $("#stage").requestFullscreen?.().catch(() => {}));
$("#opt-source").addEventListener("change", () => ($("#source-file").hidden = $("#opt-source").value !== "file"));
$("#start").addEventListener("click", start);
$("#stop").addEventListener("click", stop);
$("#pause").addEventListener("click", togglePause);
$("#opt-force-listen").addEventListener("change", () => {
  if ($("#opt-force-listen").checked) player.flush(); // silence the model at once
});
window.addEventListener("pagehide", () => {
  send({ type: "stop" });
  session.ws?.close(1000);
  // A page kept in the back-forward cache must not keep the microphone or the camera (its light) on.
  session.capture?.stop({ flush: false });
  camera?.getTracks().forEach((track) => track.stop());
  camera = null;
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted) openCamera(); // back from that cache
});

setState("stopped");
openCamera();
