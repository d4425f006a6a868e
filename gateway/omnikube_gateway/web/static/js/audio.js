/**
 * The browser end of the audio pipeline.
 *
 * MicCapture: microphone -> AudioContext at 16 kHz -> AudioWorklet -> fixed-size float32 chunks.
 * StreamPlayer: 24 kHz float32 chunks -> AudioBufferSourceNodes on a gapless timeline (PlaybackSchedule).
 * decodeToMono16k: any audio file the browser can decode -> 16 kHz mono float32 (ref audio, uploads).
 */
import { INPUT_RATE, OUTPUT_RATE, PlaybackSchedule, downmix } from "./pcm.js";

const WORKLET_URL = new URL("./capture-worklet.js", import.meta.url);

export class MicCapture {
  /** @param {{chunkSize?: number, onChunk: (f32: Float32Array) => void, deviceId?: string}} options */
  constructor({ chunkSize = INPUT_RATE, onChunk, deviceId } = {}) {
    this.chunkSize = chunkSize;
    this.onChunk = onChunk;
    this.deviceId = deviceId;
    this.ctx = null;
    this.stream = null;
    this.node = null;
    this.analyser = null;
    this.paused = false;
    this.chunks = 0;
  }

  async start() {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error("microphone unavailable: the page needs HTTPS (or localhost) and a browser with getUserMedia");
    }
    const audio = { channelCount: 1, echoCancellation: true, noiseSuppression: true };
    if (this.deviceId) audio.deviceId = { exact: this.deviceId };
    this.stream = await navigator.mediaDevices.getUserMedia({ audio });
    // The context's rate does the resampling to what the model hears.
    this.ctx = new AudioContext({ sampleRate: INPUT_RATE });
    await this.ctx.audioWorklet.addModule(WORKLET_URL);
    const source = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, "omnikube-capture", {
      processorOptions: { chunkSize: this.chunkSize },
    });
    this.node.port.onmessage = (event) => {
      if (this.paused) return;
      this.chunks += 1;
      this.onChunk(event.data);
    };
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 1024;
    source.connect(this.analyser);
    source.connect(this.node);
    // A silent path to the destination keeps the worklet pulled by the graph in every browser.
    const mute = this.ctx.createGain();
    mute.gain.value = 0;
    this.node.connect(mute).connect(this.ctx.destination);
    if (this.ctx.state === "suspended") await this.ctx.resume();
  }

  /** Stop capturing; posts the partial last chunk first when `flush` is true. */
  async stop({ flush = true } = {}) {
    if (flush && this.node) {
      const last = new Promise((resolve) => {
        const previous = this.node.port.onmessage;
        const timer = setTimeout(resolve, 300);
        this.node.port.onmessage = (event) => {
          previous(event);
          clearTimeout(timer);
          resolve();
        };
      });
      this.node.port.postMessage("flush");
      await last;
    }
    this.stream?.getTracks().forEach((t) => t.stop());
    await this.ctx?.close().catch(() => {});
    this.ctx = this.node = this.stream = this.analyser = null;
  }
}

/**
 * A file as the microphone (the duplex pages' File mode): its 16 kHz samples in chunks at the pace
 * a live microphone would deliver them, then silence, so the model can still answer what it heard.
 * Same interface as MicCapture, without an analyser.
 */
export class FileCapture {
  /** @param {{samples: Float32Array, chunkSize?: number, onChunk: (f32: Float32Array) => void, onEnd?: () => void}} options */
  constructor({ samples, chunkSize = INPUT_RATE, onChunk, onEnd = () => {} }) {
    this.samples = samples;
    this.chunkSize = chunkSize;
    this.onChunk = onChunk;
    this.onEnd = onEnd;
    this.offset = 0;
    this.paused = false;
    this.chunks = 0;
    this.analyser = null;
    this.timer = null;
  }

  async start() {
    this.timer = setInterval(() => this.tick(), (this.chunkSize / INPUT_RATE) * 1000);
  }

  tick() {
    if (this.paused) return;
    const chunk = new Float32Array(this.chunkSize); // past the end: silence
    chunk.set(this.samples.subarray(this.offset, this.offset + this.chunkSize));
    const wasPlaying = this.offset < this.samples.length;
    this.offset += this.chunkSize;
    this.chunks += 1;
    this.onChunk(chunk);
    if (wasPlaying && this.offset >= this.samples.length) this.onEnd();
  }

  async stop() {
    clearInterval(this.timer);
    this.timer = null;
  }
}

export class StreamPlayer {
  constructor({ delayMs = 200 } = {}) {
    this.schedule = new PlaybackSchedule({ delayMs });
    this.ctx = null;
    this.sources = new Set();
    this.playedChunks = 0; // chunks whose playback finished
    this.sinkId = ""; // the speaker ("" = the system default)
    this.tap = null; // (samples, startCtxTime) => void, for each chunk scheduled
    this.output = null; // every chunk plays through this node to the speaker (a recording taps it)
  }

  /** Play on this output device from now on (AudioContext.setSinkId); "" is the system default. */
  async setSink(deviceId) {
    this.sinkId = deviceId || "";
    if (this.ctx?.setSinkId) await this.ctx.setSinkId(this.sinkId);
  }

  _context() {
    if (!this.ctx) {
      this.ctx = new AudioContext({ sampleRate: OUTPUT_RATE });
      this.output = this.ctx.createGain();
      this.output.connect(this.ctx.destination);
      if (this.sinkId && this.ctx.setSinkId) this.ctx.setSinkId(this.sinkId).catch(() => {});
    }
    return this.ctx;
  }

  /** Create (or wake) the context; call from a user gesture so autoplay rules allow sound. */
  async ensureStarted() {
    const ctx = this._context();
    if (ctx.state === "suspended") await ctx.resume();
    return ctx;
  }

  set delayMs(ms) {
    this.schedule.delayS = Math.max(0, Number(ms) || 0) / 1000;
  }

  /** Queue one chunk of 24 kHz float32 samples behind what is already playing. */
  push(samples) {
    if (!samples.length) return;
    this._context();
    const buffer = this.ctx.createBuffer(1, samples.length, OUTPUT_RATE);
    buffer.copyToChannel(samples, 0);
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.output);
    const start = this.schedule.place(buffer.duration, this.ctx.currentTime);
    this.tap?.(samples, start); // a recording of the call hears what plays, and when
    source.onended = () => {
      this.sources.delete(source);
      this.playedChunks += 1;
    };
    this.sources.add(source);
    source.start(start);
  }

  endTurn() {
    this.schedule.endTurn();
  }

  /** Silence at once (stop, force-listen): drop everything scheduled. */
  flush() {
    for (const source of this.sources) {
      try {
        source.stop();
      } catch {
        /* already stopped */
      }
    }
    this.sources.clear();
    this.schedule.clear();
  }

  /** Milliseconds of speech queued ahead of the speaker. */
  get aheadMs() {
    return this.ctx ? Math.round(this.schedule.aheadS(this.ctx.currentTime) * 1000) : 0;
  }

  get playing() {
    return this.sources.size > 0;
  }

  async close() {
    this.flush();
    await this.ctx?.close().catch(() => {});
    this.ctx = this.output = null;
  }
}

/** Decode an audio (or video) file and render it as 16 kHz mono float32. */
export async function decodeToMono16k(arrayBuffer) {
  const probe = new AudioContext();
  let decoded;
  try {
    decoded = await probe.decodeAudioData(arrayBuffer);
  } finally {
    probe.close();
  }
  const length = Math.ceil(decoded.duration * INPUT_RATE);
  const offline = new OfflineAudioContext(1, Math.max(1, length), INPUT_RATE);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const rendered = await offline.startRendering();
  return downmix(rendered);
}

/** An uploaded clip as 16 kHz mono float32 and its length, refused past `maxSeconds` ("Audio too long: …"). */
export async function decodeClip(file, maxSeconds) {
  const samples = await decodeToMono16k(await file.arrayBuffer());
  const seconds = samples.length / INPUT_RATE;
  if (seconds > maxSeconds) throw new Error(`Audio too long: ${seconds.toFixed(1)}s (max ${maxSeconds}s)`);
  return { samples, seconds };
}

/**
 * A short synthesised chime (oscillators, no audio files) on the player's context:
 * "turn" when a queued user is served, "near" when the user reaches the head of the queue.
 */
export function chime(player, kind = "turn") {
  const ctx = player.ctx;
  if (!ctx || ctx.state !== "running") return;
  const notes = kind === "near" ? [880, 660] : [523.25, 659.25, 783.99, 1046.5];
  const step = kind === "near" ? 0.5 : 0.12;
  const start = ctx.currentTime + 0.05;
  notes.forEach((freq, i) => {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = freq;
    const t = start + i * step;
    gain.gain.setValueAtTime(0.0001, t);
    gain.gain.exponentialRampToValueAtTime(0.15, t + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + step * 1.6);
    osc.connect(gain).connect(ctx.destination);
    osc.start(t);
    osc.stop(t + step * 1.7);
  });
}
