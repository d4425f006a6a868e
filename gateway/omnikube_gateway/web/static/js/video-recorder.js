// The omni page's recording of the call ("Rec" / "Download Rec"), as the demo makes it: a video
// of the picture with the model's words burnt in, and a stereo sound track, left what the model
// heard (the microphone, or the input file), right what the model said. The picture and the
// subtitles are drawn on a canvas; canvas.captureStream() and the audio, mixed on the player's
// AudioContext, go through MediaRecorder in the format the user picks among those the browser
// supports. The format helpers at the top are pure (unit-tested in node).

import { downloadBlob } from "./common.js";
import { INPUT_RATE } from "./pcm.js";

/** [value, label]: the demo's format panel. "auto" is the first of the others this browser records. */
export const REC_FORMATS = [
  ["auto", "Auto"],
  ["video/webm;codecs=vp8,opus", "WebM VP8 + Opus"],
  ["video/webm;codecs=vp9,opus", "WebM VP9 + Opus"],
  ["video/webm;codecs=h264,opus", "WebM H.264 + Opus"],
  ["video/mp4;codecs=avc1.42E01E,mp4a.40.2", "MP4 H.264 + AAC"],
  ["video/mp4;codecs=avc1,opus", "MP4 H.264 + Opus"],
  ["video/mp4;codecs=vp9,opus", "MP4 VP9 + Opus"],
  ["audio/webm;codecs=opus", "Audio only (WebM Opus)"],
];
export const REC_BITRATES = [1, 2, 4, 8]; // Mbps

/** The MIME type to record `choice` in, or null when this browser records none of it. */
export function recordingMime(choice, isSupported) {
  if (choice !== "auto") return isSupported(choice) ? choice : null;
  return REC_FORMATS.slice(1).map(([mime]) => mime).find((mime) => mime.startsWith("video/") && isSupported(mime)) ?? null;
}

/** "webm" or "mp4": the file's extension for a recorded MIME type. */
export function recordingExtension(mime) {
  return /^(video|audio)\/mp4/.test(mime) ? "mp4" : "webm";
}

/** `text` in lines no wider than `maxWidth` (as `measure` says), the last `maxLines` of them. */
export function wrapLines(text, maxWidth, measure, maxLines = 3) {
  const lines = [];
  let line = "";
  // Words where there are spaces; Chinese has none, so it breaks between any two characters.
  for (const piece of text.trim().match(/\S+\s*|\s+/g) ?? []) {
    for (const part of measure(piece.trimEnd()) > maxWidth ? [...piece] : [piece]) {
      if (line && measure((line + part).trimEnd()) > maxWidth) {
        lines.push(line.trimEnd());
        line = part.trimStart();
      } else line += part;
    }
  }
  if (line.trim()) lines.push(line.trimEnd());
  return lines.slice(-maxLines);
}

/** The subtitles over the picture, as the page shows them: white on a dark band near the bottom. */
function drawSubtitles(g, text, width, height) {
  const size = Math.max(12, Math.round(height / 16));
  g.font = `${size}px sans-serif`;
  const lines = wrapLines(text, width * 0.9, (s) => g.measureText(s).width);
  if (!lines.length) return;
  const lineHeight = Math.round(size * 1.3);
  const bottom = height * 0.92;
  const top = bottom - lines.length * lineHeight;
  g.fillStyle = "rgba(0, 0, 0, 0.55)";
  g.fillRect(width * 0.04, top - size * 0.3, width * 0.92, lines.length * lineHeight + size * 0.4);
  g.fillStyle = "#fff";
  g.textAlign = "center";
  g.textBaseline = "top";
  lines.forEach((l, i) => g.fillText(l, width / 2, top + i * lineHeight));
}

const FPS = 24;

/**
 * The omni page's Rec, with the WAV recorder's interface (start, microphone, stop, blob).
 * @param {{checkbox, button, player, fileName: (ext: string) => string, video: HTMLVideoElement,
 *   drawPicture: (g, video, width, height) => void, subtitles: () => string,
 *   format: HTMLSelectElement, bitrate: HTMLSelectElement, burnIn: HTMLInputElement}} parts
 */
export function videoCallRecording({ checkbox, button, player, fileName, video, drawPicture, subtitles, format, bitrate, burnIn }) {
  const isSupported = (mime) => typeof MediaRecorder !== "undefined" && MediaRecorder.isTypeSupported(mime);
  // The panel offers every format; what this browser cannot record is greyed out.
  format.replaceChildren(...REC_FORMATS.map(([mime, label]) =>
    new Option(label, mime, mime === "auto", mime === "auto")));
  for (const option of format.options) option.disabled = option.value !== "auto" && !isSupported(option.value);
  bitrate.replaceChildren(...REC_BITRATES.map((mbps) => new Option(`${mbps} Mbps`, String(mbps), mbps === 2, mbps === 2)));

  let current = null; // {recorder, chunks, timer, nodes, done}
  let finished = null; // the last call's Blob
  button.addEventListener("click", () => {
    if (finished) downloadBlob(finished, fileName(recordingExtension(finished.type)));
  });

  function canvasStream() {
    const width = video.videoWidth || 640;
    const height = video.videoHeight || 480;
    const canvas = Object.assign(document.createElement("canvas"), { width, height });
    const g = canvas.getContext("2d");
    const draw = () => {
      g.fillStyle = "#000";
      g.fillRect(0, 0, width, height);
      if (video.videoWidth) drawPicture(g, video, width, height);
      if (burnIn.checked) drawSubtitles(g, subtitles(), width, height);
    };
    draw();
    // A timer, not requestAnimationFrame: the picture keeps coming when the tab is in the background.
    return { stream: canvas.captureStream(FPS), timer: setInterval(draw, 1000 / FPS) };
  }

  /** Left what the model hears, right the model's speech (the player's output), on the player's context. */
  function audioTrack({ stream, samples }) {
    const ctx = player.ctx;
    const merger = ctx.createChannelMerger(2);
    const out = ctx.createMediaStreamDestination();
    out.channelCount = 2;
    merger.connect(out);
    let input;
    if (stream) input = ctx.createMediaStreamSource(stream);
    else {
      // File mode: the file plays into the recording from now on, as it plays in the picture.
      const buffer = ctx.createBuffer(1, Math.max(1, samples.length), INPUT_RATE);
      buffer.copyToChannel(samples, 0);
      input = Object.assign(ctx.createBufferSource(), { buffer });
      input.start();
    }
    input.connect(merger, 0, 0);
    player.output.connect(merger, 0, 1);
    const disconnect = () => {
      input.disconnect();
      try {
        player.output?.disconnect(merger);
      } catch {
        /* the player's context is gone */
      }
    };
    return { track: out.stream.getAudioTracks()[0], disconnect };
  }

  return {
    /** The call went live: `input` is {stream} (the microphone) or {samples} (File mode). */
    start(input = {}) {
      button.hidden = true;
      finished = null;
      current = null;
      const mime = recordingMime(format.value, isSupported) ?? recordingMime("auto", isSupported);
      if (!checkbox.checked || !mime || !player.ctx) return;
      const sound = audioTrack(input);
      const picture = mime.startsWith("video/") ? canvasStream() : null;
      const tracks = [...(picture ? picture.stream.getVideoTracks() : []), sound.track];
      const recorder = new MediaRecorder(new MediaStream(tracks), {
        mimeType: mime, videoBitsPerSecond: Number(bitrate.value) * 1_000_000, audioBitsPerSecond: 128_000 });
      const chunks = [];
      recorder.ondataavailable = (event) => event.data.size && chunks.push(event.data);
      const done = new Promise((resolve) => (recorder.onstop = resolve));
      recorder.start(1000);
      current = { recorder, chunks, done, mime, picture, sound };
    },
    microphone() {
      // The sound track comes from the microphone's own stream, not from the chunks sent.
    },
    pause() {
      if (current?.recorder.state === "recording") current.recorder.pause();
    },
    resume() {
      if (current?.recorder.state === "paused") current.recorder.resume();
    },
    /** The last finished call as a video (or audio) Blob, or null. */
    blob() {
      return finished;
    },
    async stop() {
      const rec = current;
      current = null;
      if (!rec) return;
      if (rec.recorder.state !== "inactive") rec.recorder.stop();
      await rec.done;
      clearInterval(rec.picture?.timer);
      rec.picture?.stream.getTracks().forEach((t) => t.stop());
      rec.sound.disconnect();
      if (rec.chunks.length) finished = new Blob(rec.chunks, { type: rec.mime });
      button.hidden = !finished;
    },
  };
}
