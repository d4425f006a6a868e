/**
 * Half-duplex voice call (/half_duplex) over ws/half_duplex/{hdx_id}.
 *
 * The client sends `prepare` at once (the gateway holds it while queued), then 0.5 s microphone
 * chunks, but only while the model is not speaking. The server's VAD decides when a turn ends:
 * vad_state → generating → chunk* (text + 24 kHz speech) → turn_done. The microphone reopens a
 * moment after the scheduled speech has played, so the model does not hear itself.
 */
import { $, api, buildNav, logClose, logLine, rememberSession, rememberSettings, statusPill, wsUrl } from "./common.js";
import { MicCapture, StreamPlayer } from "./audio.js";
import { base64ToFloat32, float32ToBase64 } from "./pcm.js";
import { QueuePanel } from "./queue-view.js";
import { ShareButton } from "./share.js";
import { devicePicker } from "./devices.js";
import { faqPanel } from "./faq.js";
import { localStamp } from "./export.js";
import { callRecording } from "./recorder.js";
import { VoicePicker } from "./voice.js";
import { SystemContentEditor, systemContent } from "./system-content.js";

const CHUNK_SAMPLES = 8000; // 0.5 s at 16 kHz
const REOPEN_AFTER_MS = 800;

const log = $("#log");
const player = new StreamPlayer({ delayMs: 50 });
const voice = new VoicePicker($("#voice"), { mode: "half_duplex_audio" });
const systemEditor = new SystemContentEditor($("#system-content"));
const share = new ShareButton($("#share"), "half_duplex_audio");
const queue = new QueuePanel($("#queue"), { onLeave: () => stop(), player });
statusPill(15000);
buildNav("half_duplex");
faqPanel("half-duplex");
const settings = rememberSettings("half_duplex");
const devices = devicePicker($("#devices"), player);
const callRec = callRecording({ checkbox: $("#opt-rec"), button: $("#download-rec"), player,
  fileName: () => `half-duplex-${localStamp(new Date(), "")}.wav` });
share.setRecording(() => callRec.blob());
$("#reset-settings").addEventListener("click", () => {
  settings.reset();
  systemEditor.clear();
});

const session = {
  state: "stopped", // connecting | queued | preparing | listening | generating | stopping | stopped
  id: null,
  ws: null,
  capture: null,
  micOpen: false,
  turns: 0,
  chunksSent: 0,
  aiLine: null,
  deadline: null,
  reopenTimer: null,
};
window.omnikube = { session, player, queue, voice, systemEditor };

function setState(next, label) {
  session.state = next;
  const running = next !== "stopped";
  const lamp = $("#lamp");
  lamp.textContent = label ?? { connecting: "Connecting…", queued: "Queued", preparing: "Preparing…",
    listening: "Listening", generating: "AI speaking", stopping: "Stopping…", stopped: "Stopped" }[next];
  lamp.className = `lamp ${next === "listening" ? "live" : next === "queued" ? "queued" : ""}`;
  $("#start").disabled = running;
  $("#stop").disabled = !running || next === "stopping";
  $("#stop").textContent = ["connecting", "queued"].includes(next) ? "Cancel" : "Stop";
  $("#turns").textContent = session.turns ? `Turns: ${session.turns}` : "";
}

setInterval(() => {
  if (!session.deadline || session.state === "stopped") return;
  const left = Math.max(0, Math.round((session.deadline - Date.now()) / 1000));
  $("#timer").textContent = left ? `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} left` : "Expired";
}, 1000);

function send(message) {
  if (session.ws?.readyState === WebSocket.OPEN) session.ws.send(JSON.stringify(message));
}

function prepareMessage() {
  return {
    type: "prepare",
    // The worker speaks with the first audio item's voice: the chosen voice comes before the editor's.
    system_content: systemContent($("#system-prompt").value.trim(), voice.value, systemEditor.items()),
    config: {
      vad: { threshold: Number($("#opt-threshold").value), min_speech_duration_ms: 128,
        min_silence_duration_ms: Number($("#opt-silence").value), speech_pad_ms: 30 },
      generation: { max_new_tokens: Number($("#opt-max-tokens").value), length_penalty: Number($("#opt-length-penalty").value),
        temperature: Number($("#opt-temperature").value) || 0.7 },
      tts: { enabled: $("#opt-voice").checked },
      session: { timeout_s: Number($("#opt-timeout").value) },
    },
  };
}

async function start() {
  if (session.state !== "stopped") return;
  // Wake the audio output first, while the click still counts as a user gesture.
  await player.ensureStarted();
  await voice.ready;
  const rand = Array.from({ length: 8 }, () => Math.floor(Math.random() * 36).toString(36)).join("");
  Object.assign(session, { id: `hdx_${rand}`, turns: 0, chunksSent: 0, aiLine: null, deadline: null, micOpen: false });
  $("#session-id").textContent = session.id;
  setState("connecting");
  const ws = new WebSocket(wsUrl(`ws/half_duplex/${session.id}`));
  session.ws = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    send(prepareMessage());
  };
  ws.onmessage = (event) => ws === session.ws && onFrame(JSON.parse(event.data));
  ws.onclose = (event) => {
    if (ws !== session.ws) return;
    if (session.state !== "stopping") logClose(log, event, opened);
    teardown();
  };
}

function onFrame(frame) {
  switch (frame.type) {
    case "queued":
    case "queue_update":
      queue.update(frame);
      setState("queued");
      break;
    case "queue_done":
      queue.served();
      setState("preparing");
      break;
    case "prepared":
      onPrepared(frame);
      break;
    case "vad_state":
      if (session.state === "listening") $("#lamp").textContent = frame.speaking ? "You are speaking…" : "Listening";
      break;
    case "generating":
      session.micOpen = false; // do not let the model hear itself
      clearTimeout(session.reopenTimer);
      player.flush();
      logLine(log, `You — voice input (${(frame.speech_duration_ms / 1000).toFixed(1)}s)`, "user");
      setState("generating");
      break;
    case "chunk":
      if (frame.text_delta) {
        if (!session.aiLine) session.aiLine = logLine(log, "AI: ", "ai");
        session.aiLine.textContent += frame.text_delta;
      }
      if (frame.audio_data) player.push(base64ToFloat32(frame.audio_data));
      break;
    case "turn_done":
      session.turns = frame.turn_index ?? session.turns + 1;
      session.aiLine = null;
      player.endTurn();
      // Reopen the microphone once the scheduled speech has played.
      clearTimeout(session.reopenTimer);
      session.reopenTimer = setTimeout(() => {
        if (session.state !== "generating") return;
        session.micOpen = true;
        setState("listening");
      }, player.aheadMs + REOPEN_AFTER_MS);
      break;
    case "timeout":
      logLine(log, "Timeout: the session reached its time limit; start again to continue.", "error");
      teardown();
      break;
    case "error":
      logLine(log, `Error: ${frame.error}`, "error");
      break;
    default:
      break;
  }
}

async function onPrepared(frame) {
  queue.done();
  const recording = frame.recording_session_id ?? null;
  if (recording) rememberSession(recording, "half_duplex_audio");
  share.setSession(recording);
  session.deadline = Date.now() + (frame.timeout_s ?? 300) * 1000;
  session.capture = new MicCapture({
    chunkSize: CHUNK_SAMPLES,
    deviceId: devices.deviceId("audioinput"),
    onChunk: (samples) => {
      callRec.microphone(samples); // the whole call, also while the model speaks
      if (!session.micOpen) return;
      send({ type: "audio_chunk", audio_base64: float32ToBase64(samples) });
      session.chunksSent += 1;
    },
  });
  try {
    await session.capture.start();
  } catch (error) {
    logLine(log, `Error: ${error.message}`, "error");
    stop();
    return;
  }
  session.micOpen = true;
  callRec.start();
  setState("listening");
  logLine(log, "Session active — speak, then pause to let the model answer");
}

function stop() {
  const ws = session.ws;
  if (!ws || ["stopping", "stopped"].includes(session.state)) return;
  if (queue.ticketId && session.state === "queued") {
    api(`api/queue/${encodeURIComponent(queue.ticketId)}`, { method: "DELETE" }).catch(() => {});
  }
  setState("stopping");
  send({ type: "stop" });
  ws.close(1000, "client stopped");
  logLine(log, "Stopped");
  teardown();
}

function teardown() {
  clearTimeout(session.reopenTimer);
  queue.done();
  session.capture?.stop({ flush: false });
  session.capture = null;
  session.micOpen = false;
  if (session.ws && session.ws.readyState <= WebSocket.OPEN) session.ws.close(1000);
  session.ws = null;
  player.flush();
  callRec.stop();
  setState("stopped");
}

$("#start").addEventListener("click", start);
$("#stop").addEventListener("click", stop);
window.addEventListener("pagehide", () => stop());
setState("stopped");
