/**
 * PCM helpers shared by the audio pipeline: the wire encoding (base64 of raw little-endian
 * float32 mono), linear resampling, 16-bit WAV files, and the gapless playback schedule.
 *
 * Pure logic (no AudioContext), so node's test runner covers it; audio.js wires it to Web Audio.
 */

export const INPUT_RATE = 16000; // what the model hears
export const OUTPUT_RATE = 24000; // what the model speaks

/** Float32Array -> base64 of its little-endian bytes (the `audio_base64` / `data` fields). */
export function float32ToBase64(samples) {
  const f32 = samples instanceof Float32Array ? samples : Float32Array.from(samples);
  const bytes = new Uint8Array(f32.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < f32.length; i++) view.setFloat32(i * 4, f32[i], true);
  return bytesToBase64(bytes);
}

/** base64 of little-endian float32 bytes -> Float32Array. Throws on a length that is not 4n. */
export function base64ToFloat32(b64) {
  const bytes = base64ToBytes(b64);
  if (bytes.length % 4 !== 0) throw new Error(`audio payload of ${bytes.length} bytes is not float32`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

export function bytesToBase64(bytes) {
  // Chunked so that String.fromCharCode never gets more arguments than the engine allows.
  let binary = "";
  const step = 0x8000;
  for (let i = 0; i < bytes.length; i += step) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + step));
  }
  return btoa(binary);
}

export function base64ToBytes(b64) {
  const binary = atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** Linear-interpolation resampling; good enough for speech between 16, 24 and 48 kHz. */
export function resampleLinear(samples, fromRate, toRate) {
  if (fromRate === toRate) return Float32Array.from(samples);
  const outLength = Math.max(0, Math.round((samples.length * toRate) / fromRate));
  const out = new Float32Array(outLength);
  const ratio = fromRate / toRate;
  for (let i = 0; i < outLength; i++) {
    const pos = i * ratio;
    const left = Math.floor(pos);
    const right = Math.min(left + 1, samples.length - 1);
    const frac = pos - left;
    out[i] = samples[left] * (1 - frac) + samples[right] * frac;
  }
  return out;
}

/** Downmix an AudioBuffer-like object ({numberOfChannels, getChannelData}) to mono. */
export function downmix(buffer) {
  const channels = buffer.numberOfChannels;
  const first = buffer.getChannelData(0);
  if (channels === 1) return Float32Array.from(first);
  const out = new Float32Array(first.length);
  for (let c = 0; c < channels; c++) {
    const data = buffer.getChannelData(c);
    for (let i = 0; i < out.length; i++) out[i] += data[i] / channels;
  }
  return out;
}

/** Mono float32 -> 16-bit PCM WAV bytes (for downloads and the audio elements of players). */
export function encodeWav(samples, sampleRate) {
  return encodeWavChannels([samples], sampleRate);
}

/** Equal-length float32 channels (left, right, ...) -> interleaved 16-bit PCM WAV bytes. */
export function encodeWavChannels(channels, sampleRate) {
  const frames = channels[0].length;
  const width = channels.length * 2; // bytes per frame
  const bytes = new Uint8Array(44 + frames * width);
  const view = new DataView(bytes.buffer);
  const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + frames * width, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, channels.length, true);
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * width, true);
  view.setUint16(32, width, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, frames * width, true);
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < channels.length; c++) {
      const s = Math.max(-1, Math.min(1, channels[c][i]));
      view.setInt16(44 + i * width + c * 2, Math.round(s * 32767), true);
    }
  }
  return bytes;
}

/**
 * Where each incoming chunk goes on the output timeline, so speech plays back to back.
 *
 * The first chunk of a speaking turn starts `delayMs` after it arrives: that buffer absorbs
 * network jitter. Later chunks start where the previous one ends. If the cursor has fallen behind
 * the clock (a chunk came late), the chunk starts at once and the shortfall is counted as a gap.
 */
export class PlaybackSchedule {
  constructor({ delayMs = 200, gapToleranceS = 0.01 } = {}) {
    this.delayS = Math.max(0, delayMs) / 1000;
    this.gapToleranceS = gapToleranceS;
    this.cursor = null; // end time of the last scheduled chunk; null when nothing was scheduled
    this.turnOpen = false; // false until the first chunk of a speaking turn arrives
    this.gaps = 0;
    this.shiftS = 0; // total time lost to gaps
    this.chunks = 0;
    this.scheduledS = 0;
  }

  /** Start time for a chunk of `durationS` arriving at clock time `nowS`. */
  place(durationS, nowS) {
    let start;
    if (!this.turnOpen) {
      // A new turn never overlaps the tail of the previous one.
      start = Math.max(nowS + this.delayS, this.cursor ?? 0);
      this.turnOpen = true;
    } else if (this.cursor < nowS - this.gapToleranceS) {
      this.gaps += 1;
      this.shiftS += nowS - this.cursor;
      start = nowS;
    } else {
      start = Math.max(this.cursor, nowS);
    }
    this.cursor = start + durationS;
    this.chunks += 1;
    this.scheduledS += durationS;
    return start;
  }

  /** The speaker finished its turn: the next chunk waits for the delay again. */
  endTurn() {
    this.turnOpen = false;
  }

  /** Everything scheduled was dropped (stop, force-listen): start from a clean timeline. */
  clear() {
    this.turnOpen = false;
    this.cursor = null;
  }

  /** Seconds of audio queued ahead of the clock (0 when idle). */
  aheadS(nowS) {
    return this.cursor === null ? 0 : Math.max(0, this.cursor - nowS);
  }
}
