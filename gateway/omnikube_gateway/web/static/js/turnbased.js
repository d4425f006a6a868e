/**
 * Turn-based chat (/turnbased): text, images, recorded or uploaded audio; streamed text and speech.
 *
 * One WebSocket to ws/chat per request: the first frame carries the whole history (the worker is
 * stateless), then `prefill_done`, `chunk`* (streaming), `done` or `error`. While every worker is
 * busy the gateway holds the socket. Queue frames, if the gateway sends them (asked for with
 * ?queue_events=1), drive the countdown; otherwise the page finds its own ticket in GET /api/queue
 * (queue.js findOwnTicket), and failing that shows an estimate from /status. Stop and "Leave queue"
 * close the socket, which makes the gateway free the place or the worker.
 */
import { $, api, buildNav, closeReason, downloadBlob, el, frontendDefaults, rememberSession, rememberSettings, statusPill, wsUrl } from "./common.js";
import { MicCapture, StreamPlayer, decodeToMono16k } from "./audio.js";
import { INPUT_RATE, OUTPUT_RATE, base64ToFloat32, bytesToBase64, encodeWav, float32ToBase64 } from "./pcm.js";
import { estimateWaitFromStatus, findOwnTicket } from "./queue.js";
import { QueuePanel } from "./queue-view.js";
import { ShareButton } from "./share.js";
import { devicePicker } from "./devices.js";
import { faqPanel } from "./faq.js";
import { conversationForExport, exportFileName } from "./export.js";
import { VoicePicker } from "./voice.js";
import { SystemContentEditor, systemContent } from "./system-content.js";

const MAX_IMAGE_BYTES = 20 * 1024 * 1024;
// A whole conversation goes in every request (base64 adds a third): keep videos well under the 128 MiB limit.
const MAX_VIDEO_BYTES = 50 * 1024 * 1024;
const ICONS = { image: "🖼", audio: "🔊", video: "🎞" };
const HOLD_MS = 300; // a press longer than this is push-to-talk, shorter toggles recording
const QUEUE_POLL_MS = 2000;

const state = {
  history: [], // wire messages, without the system message
  spoken: new Map(), // assistant message of the history -> its 24 kHz speech, for the export
  attachments: [], // {kind: "image"|"audio"|"video", name, data, samples?, url?}
  request: null, // the request in flight: {ws, bubble, ...}
  recorder: null, // {capture, chunks, startedAt, toggleStop}
};

const player = new StreamPlayer();
const voice = new VoicePicker($("#voice"), {
  mode: "turnbased",
  label: "System prompt voice (reference audio)",
  onPreset: (preset) => {
    const text = preset.system_content?.find((item) => item.type === "text")?.text ?? preset.system_prompt;
    if (text) $("#system-prompt").value = text;
  },
});
const ttsVoice = new VoicePicker($("#tts-voice"), { mode: "turnbased", label: "TTS voice (voice cloning)", sameAs: "the system prompt's voice" });
const systemEditor = new SystemContentEditor($("#system-content"));
const share = new ShareButton($("#share"), "chat");
const queue = new QueuePanel($("#queue"), { onLeave: () => stopRequest(), player });
const status = statusPill(3000, (s) => {
  const req = state.request;
  if (req && !req.started && !queue.countdown.queued) queue.estimate(estimateWaitFromStatus(s));
});

// For the browser tests and for curious users: the live objects of this page.
window.omnikube = { state, player, queue, voice, ttsVoice, systemEditor };

frontendDefaults().then((d) => (player.delayMs = d.playback_delay_ms));
buildNav("turnbased");
faqPanel("turnbased");
const settings = rememberSettings("turnbased");
const devices = devicePicker($("#devices"), player);
$("#reset-settings").addEventListener("click", () => {
  settings.reset();
  systemEditor.clear();
});

// ---------------------------------------------------------------- compose

function showError(message) {
  $("#error").textContent = message ?? "";
}

function renderAttachments() {
  $("#attachments").replaceChildren(
    ...state.attachments.map((a, i) =>
      el("span", {}, `${ICONS[a.kind]} ${a.name} `,
        el("button", { type: "button", "aria-label": `Remove ${a.name}`,
          onclick: () => { state.attachments.splice(i, 1); renderAttachments(); } }, "×"))));
}

async function addFiles(files) {
  for (const file of files) {
    try {
      if (file.type.startsWith("image/")) {
        if (file.size > MAX_IMAGE_BYTES) throw new Error(`image larger than ${MAX_IMAGE_BYTES >> 20} MB`);
        const data = bytesToBase64(new Uint8Array(await file.arrayBuffer()));
        state.attachments.push({ kind: "image", name: file.name, data, mime: file.type });
      } else if (file.type.startsWith("video/")) {
        if (file.size > MAX_VIDEO_BYTES) throw new Error(`video larger than ${MAX_VIDEO_BYTES >> 20} MB`);
        const data = bytesToBase64(new Uint8Array(await file.arrayBuffer()));
        state.attachments.push({ kind: "video", name: file.name, data, url: URL.createObjectURL(file) });
      } else if (file.type.startsWith("audio/")) {
        const samples = await decodeToMono16k(await file.arrayBuffer());
        state.attachments.push({ kind: "audio", name: file.name, data: float32ToBase64(samples), samples });
      } else {
        throw new Error(`unsupported type ${file.type || "unknown"}`);
      }
    } catch (error) {
      showError(`Cannot attach ${file.name}: ${error.message}`);
    }
  }
  renderAttachments();
}

$("#attach").addEventListener("click", () => $("#file").click());
$("#file").addEventListener("change", async () => {
  await addFiles([...$("#file").files]);
  $("#file").value = "";
});
document.addEventListener("paste", (event) => {
  const files = [...(event.clipboardData?.files ?? [])];
  if (files.length) addFiles(files);
});
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => {
  event.preventDefault();
  addFiles([...(event.dataTransfer?.files ?? [])]);
});

// ---------------------------------------------------------------- recording (push-to-talk)

async function startRecording() {
  if (state.recorder) return;
  const chunks = [];
  const capture = new MicCapture({ chunkSize: 1600, onChunk: (c) => chunks.push(c), deviceId: devices.deviceId("audioinput") });
  state.recorder = { capture, chunks, startedAt: performance.now() };
  $("#mic").classList.add("recording");
  $("#mic").textContent = "⏺";
  try {
    await capture.start();
  } catch (error) {
    showError(`Microphone: ${error.message}`);
    state.recorder = null;
    resetMicButton();
  }
}

function resetMicButton() {
  $("#mic").classList.remove("recording");
  $("#mic").textContent = "🎤";
}

async function stopRecording({ keep = true } = {}) {
  const rec = state.recorder;
  if (!rec) return;
  state.recorder = null;
  resetMicButton();
  await rec.capture.stop({ flush: keep });
  if (!keep) return;
  const total = rec.chunks.reduce((n, c) => n + c.length, 0);
  if (total < INPUT_RATE / 10) return; // under 0.1 s: a slip of the finger
  const samples = new Float32Array(total);
  let offset = 0;
  for (const c of rec.chunks) {
    samples.set(c, offset);
    offset += c.length;
  }
  state.attachments.push({
    kind: "audio", name: `recording ${(total / INPUT_RATE).toFixed(1)}s`, data: float32ToBase64(samples), samples,
  });
  renderAttachments();
}

function pressStart() {
  if (state.recorder) {
    state.recorder.toggleStop = true;
    return;
  }
  state.pressAt = performance.now();
  startRecording();
}

function pressEnd() {
  const rec = state.recorder;
  if (!rec) return;
  if (rec.toggleStop || performance.now() - state.pressAt > HOLD_MS) stopRecording();
}

$("#mic").addEventListener("pointerdown", pressStart);
$("#mic").addEventListener("pointerup", pressEnd);

const input = $("#input");
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.recorder) {
    stopRecording({ keep: false });
    return;
  }
  if (event.code === "Space" && !event.repeat && spaceTalks()) {
    event.preventDefault();
    state.spaceDown = true;
    pressStart();
  }
});
document.addEventListener("keyup", (event) => {
  if (event.code === "Space" && state.spaceDown) {
    event.preventDefault();
    state.spaceDown = false;
    pressEnd();
  }
});

/** Space means "talk" in the empty compose box or when nothing that takes typing has focus. */
function spaceTalks() {
  const focused = document.activeElement;
  if (focused === input) return input.value === "";
  const typing = focused?.isContentEditable || ["INPUT", "TEXTAREA", "SELECT", "BUTTON"].includes(focused?.tagName);
  return !typing && !document.querySelector("dialog[open]");
}
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});

// ---------------------------------------------------------------- conversation

function wavUrl(samples, rate) {
  return URL.createObjectURL(new Blob([encodeWav(samples, rate)], { type: "audio/wav" }));
}

function userBubble(text, attachments) {
  const bubble = el("div", { class: "msg user" }, text);
  for (const a of attachments) {
    if (a.kind === "image") bubble.append(el("img", { src: `data:${a.mime};base64,${a.data}`, alt: a.name }));
    else if (a.kind === "video") bubble.append(el("video", { controls: true, src: a.url, class: "attachment" }));
    else bubble.append(el("audio", { controls: true, src: wavUrl(a.samples, INPUT_RATE) }));
  }
  return bubble;
}

/** The system message: the prompt, its voice when the answer is spoken, then the editor's items;
 * a plain string when it is only text, as the demo sends it. */
function systemMessage(withVoice) {
  const text = $("#system-prompt").value.trim();
  const content = systemContent(text, withVoice ? voice.value : null, systemEditor.items());
  if (!content.length) return null;
  return { role: "system", content: content.length === 1 && content[0].type === "text" ? text : content };
}

function hasVideo() {
  return state.history.some((m) => Array.isArray(m.content) && m.content.some((item) => item.type === "video"));
}

function buildRequest(withVoice) {
  const system = systemMessage(withVoice);
  const request = {
    messages: system ? [system, ...state.history] : [...state.history],
    streaming: $("#opt-streaming").checked,
    generation: {
      max_new_tokens: Number($("#opt-max-tokens").value) || 256,
      do_sample: true,
      length_penalty: Number($("#opt-length-penalty").value) || 1.1,
    },
    // A video is frames and its soundtrack together: the demo sends it in omni mode, one slice per frame.
    image: { max_slice_nums: hasVideo() ? 1 : null },
    omni_mode: hasVideo(),
  };
  if (withVoice) {
    request.tts = { enabled: true, mode: "audio_assistant" };
    // The voice it speaks with: the TTS voice when one is chosen, else the system prompt's.
    const speaker = ttsVoice.value ?? voice.value;
    if (speaker) request.tts.ref_audio_data = speaker;
    request.use_tts_template = true;
  }
  return request;
}

function setBusy(busy) {
  $("#send").hidden = busy;
  $("#stop").hidden = !busy;
  $("#clear").disabled = busy;
}

async function send() {
  if (state.request) return;
  if (state.recorder) await stopRecording();
  const text = input.value.trim();
  if (!text && state.attachments.length === 0) return;
  showError("");
  // Wake the audio output first, while the click still counts as a user gesture.
  await player.ensureStarted();
  await Promise.all([voice.ready, ttsVoice.ready]);

  const attachments = state.attachments;
  const content = attachments.length
    ? [
        ...attachments.map((a) => ({ type: a.kind, data: a.data })),
        ...(text ? [{ type: "text", text }] : []),
      ]
    : text;
  const message = { role: "user", content };
  state.history.push(message);
  const userNode = userBubble(text, attachments);
  const draft = { text, attachments };
  const index = state.history.length - 1;
  userNode.append(el("button", { type: "button", class: "edit", title: "Edit this message and send it again: the conversation after it is dropped",
    onclick: () => editFrom(userNode, index, draft) }, "✎ Edit"));
  const answer = el("div", { class: "msg assistant" }, el("span", { class: "text" }, "…"));
  $("#messages").append(userNode, answer);
  input.value = "";
  state.attachments = [];
  renderAttachments();

  const withVoice = $("#opt-voice").checked;
  const req = {
    ws: new WebSocket(wsUrl("ws/chat?queue_events=1")),
    bubble: answer,
    userNode,
    message,
    draft,
    text: "",
    audio: [],
    started: false,
    finished: false,
    sentAt: performance.now(),
  };
  state.request = req;
  window.omnikube.lastSocketUrl = req.ws.url;
  setBusy(true);
  status.refresh();

  req.ws.onopen = () => {
    req.opened = true;
    req.ws.send(JSON.stringify(buildRequest(withVoice)));
    req.queuedAt = performance.now();
    req.queueTimer = setInterval(() => watchQueue(req), QUEUE_POLL_MS);
    setTimeout(() => watchQueue(req), 300); // the ticket exists as soon as the request frame lands
  };
  req.ws.onmessage = (event) => onFrame(req, JSON.parse(event.data));
  req.ws.onerror = () => {};
  req.ws.onclose = (event) => {
    if (!req.finished) finish(req, { error: req.cancelled ? null : closeReason(event, req.opened) });
  };
  $("#messages").scrollTop = $("#messages").scrollHeight;
}

function onFrame(req, frame) {
  const textNode = req.bubble.querySelector(".text");
  switch (frame.type) {
    case "queued":
    case "queue_update":
      req.gotQueueFrames = true;
      queue.update(frame);
      req.bubble.dataset.state = "queued";
      break;
    case "queue_done":
      queue.done();
      break;
    case "prefill_done":
      queue.served();
      req.started = true;
      req.bubble.dataset.state = "generating";
      break;
    case "chunk":
      queue.done();
      req.started = true;
      if (frame.text_delta) {
        req.text += frame.text_delta;
        textNode.textContent = req.text;
      }
      if (frame.audio_data) playAudio(req, frame.audio_data);
      break;
    case "done":
      req.started = true;
      if (frame.text !== undefined && frame.text !== null) req.text = frame.text;
      textNode.textContent = req.text || "(empty answer)";
      if (frame.audio_data && req.audio.length === 0) playAudio(req, frame.audio_data);
      finish(req, { done: frame });
      break;
    case "error":
      finish(req, { error: frame.error ?? "unknown error" });
      break;
    default:
      break; // frames this page does not use (e.g. a gateway's extra info)
  }
  $("#messages").scrollTop = $("#messages").scrollHeight;
}

/** Without queue frames on the socket: look for our ticket in the queue snapshot. */
async function watchQueue(req) {
  if (req.started || req.finished || req.gotQueueFrames) return;
  try {
    const snapshot = await api("api/queue");
    if (req.started || req.finished) return;
    const frame = findOwnTicket(snapshot, { waitedS: (performance.now() - req.queuedAt) / 1000 });
    if (frame) {
      queue.update(frame);
      req.bubble.dataset.state = "queued";
    }
  } catch {
    /* /status estimate still shows */
  }
}

function playAudio(req, b64) {
  try {
    const samples = base64ToFloat32(b64);
    req.audio.push(samples);
    player.push(samples);
    req.bubble.dataset.audioChunks = String(req.audio.length);
  } catch (error) {
    showError(`Bad audio from the server: ${error.message}`);
  }
}

function finish(req, { done, error }) {
  if (req.finished) return;
  req.finished = true;
  clearInterval(req.queueTimer);
  state.request = null;
  queue.done();
  setBusy(false);
  player.endTurn();
  if (req.ws.readyState <= WebSocket.OPEN) req.ws.close();

  if (req.cancelled && !req.started) {
    // Left the queue before anything happened: undo the send and give the text back.
    state.history.pop();
    req.userNode.remove();
    req.bubble.remove();
    input.value = req.draft.text;
    state.attachments = req.draft.attachments;
    renderAttachments();
    return;
  }
  const meta = el("div", { class: "meta" });
  if (done) {
    req.answer = { role: "assistant", content: req.text };
    state.history.push(req.answer);
    const seconds = ((performance.now() - req.sentAt) / 1000).toFixed(1);
    meta.append(`${$("#opt-streaming").checked ? "streaming" : "chat"} · ${seconds}s · in ${done.input_tokens ?? "?"} · gen ${done.generated_tokens ?? "?"}`);
    if (done.recording_session_id) {
      rememberSession(done.recording_session_id, "chat");
      share.setSession(done.recording_session_id);
      meta.append(" · ", el("a", { href: `s/${encodeURIComponent(done.recording_session_id)}`, target: "_blank" }, "recording"));
    }
    req.bubble.dataset.state = "done";
  } else {
    if (req.cancelled) {
      meta.append("stopped");
      if (req.text) {
        req.answer = { role: "assistant", content: req.text };
        state.history.push(req.answer);
      } else state.history.pop();
    } else {
      state.history.pop(); // the request failed; do not resend a turn without an answer
      req.bubble.append(el("div", { class: "error" }, `Error: ${error}`));
    }
    req.bubble.dataset.state = req.cancelled ? "stopped" : "error";
  }
  if (req.audio.length) {
    const total = req.audio.reduce((n, c) => n + c.length, 0);
    const all = new Float32Array(total);
    let offset = 0;
    for (const c of req.audio) {
      all.set(c, offset);
      offset += c.length;
    }
    if (req.answer) state.spoken.set(req.answer, all);
    const url = wavUrl(all, OUTPUT_RATE);
    req.bubble.append(el("audio", { controls: true, src: url }),
      el("a", { href: url, download: "answer.wav", class: "muted" }, "⬇ WAV"));
    meta.append(` · 🔊 ${(total / OUTPUT_RATE).toFixed(1)}s`);
  }
  req.bubble.append(meta);
}

/** Back to the composer with a sent message: it and everything after it leave the conversation. */
function editFrom(node, index, draft) {
  if (state.request) {
    showError("Stop the answer in progress before editing a message.");
    return;
  }
  showError("");
  player.flush();
  while (node.nextSibling) node.nextSibling.remove();
  node.remove();
  // A turn that failed was already taken out of the history; its bubble stays until edited or cleared.
  state.history.length = Math.min(state.history.length, index);
  for (const message of state.spoken.keys()) if (!state.history.includes(message)) state.spoken.delete(message);
  input.value = draft.text;
  state.attachments = [...draft.attachments];
  renderAttachments();
  input.focus();
}

function stopRequest() {
  const req = state.request;
  if (!req) return;
  req.cancelled = true;
  player.flush();
  // Closing the socket is what makes the gateway give the place or the worker back.
  if (queue.ticketId) api(`api/queue/${encodeURIComponent(queue.ticketId)}`, { method: "DELETE" }).catch(() => {});
  req.ws.close();
  finish(req, {});
}

$("#send").addEventListener("click", send);
$("#stop").addEventListener("click", stopRequest);
$("#clear").addEventListener("click", () => {
  state.history = [];
  state.spoken.clear();
  $("#messages").replaceChildren();
  player.flush();
});
window.addEventListener("beforeunload", () => state.request?.ws.close());

/** The MessagePack library, loaded on the first export (a classic script: it defines window.MessagePack). */
function messagePack() {
  if (window.MessagePack) return Promise.resolve(window.MessagePack);
  return new Promise((resolve, reject) => {
    const script = el("script", { src: "static/js/vendor/msgpack.min.js" });
    script.onload = () => resolve(window.MessagePack);
    script.onerror = () => reject(new Error("the MessagePack library did not load"));
    document.head.append(script);
  });
}

$("#export").addEventListener("click", async () => {
  try {
    const system = systemMessage($("#opt-voice").checked);
    const conversation = conversationForExport(system ? [system, ...state.history] : state.history, state.spoken);
    const bytes = (await messagePack()).encode(conversation);
    downloadBlob(new Blob([bytes], { type: "application/x-msgpack" }), exportFileName());
  } catch (error) {
    showError(`Export failed: ${error.message}`);
  }
});
