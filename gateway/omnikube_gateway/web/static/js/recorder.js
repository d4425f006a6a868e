// The browser's own recording of a call ("Rec" / "Download Rec"): a stereo WAV at 24 kHz, left what
// the microphone heard, right what the model said, placed when it was scheduled to play.
// `StereoRecorder` is pure; `callRecording` binds one to a page's checkbox, button and player.

import { downloadBlob } from "./common.js";
import { INPUT_RATE, OUTPUT_RATE, encodeWavChannels, resampleLinear } from "./pcm.js";

export class StereoRecorder {
  constructor(rate = OUTPUT_RATE) {
    this.rate = rate;
    this.left = []; // microphone chunks, back to back
    this.leftFrames = 0;
    this.right = []; // {at, samples}: the model's chunks at their playback offsets
  }

  /** The next stretch of microphone audio (captured without gaps). */
  addMicrophone(samples, fromRate = INPUT_RATE) {
    const chunk = resampleLinear(samples, fromRate, this.rate);
    this.left.push(chunk);
    this.leftFrames += chunk.length;
  }

  /** A chunk of the model's speech (at this recorder's rate) that plays `atSeconds` into the call. */
  addModel(samples, atSeconds) {
    this.right.push({ at: Math.max(0, Math.round(atSeconds * this.rate)), samples });
  }

  get empty() {
    return this.leftFrames === 0 && this.right.length === 0;
  }

  get durationS() {
    const rightEnd = this.right.reduce((end, c) => Math.max(end, c.at + c.samples.length), 0);
    return Math.max(this.leftFrames, rightEnd) / this.rate;
  }

  toWav() {
    const frames = Math.round(this.durationS * this.rate);
    const left = new Float32Array(frames);
    let offset = 0;
    for (const chunk of this.left) {
      left.set(chunk, offset);
      offset += chunk.length;
    }
    const right = new Float32Array(frames);
    for (const { at, samples } of this.right) {
      for (let i = 0; i < samples.length; i++) right[at + i] += samples[i];
    }
    return encodeWavChannels([left, right], this.rate);
  }
}

/**
 * One recording per call: `start()` when the call goes live (if the checkbox is on), `microphone()`
 * for each captured chunk, `stop()` at the end, which offers the file on `button`.
 * @param {{checkbox: HTMLInputElement, button: HTMLButtonElement, player: object, fileName: () => string}} parts
 */
export function callRecording({ checkbox, button, player, fileName }) {
  let current = null;
  let finished = null;
  button.addEventListener("click", () => {
    if (finished) downloadBlob(new Blob([finished.toWav()], { type: "audio/wav" }), fileName());
  });
  return {
    start() {
      button.hidden = true;
      finished = null;
      current = checkbox.checked ? new StereoRecorder() : null;
      if (!current || !player.ctx) return;
      const origin = player.ctx.currentTime;
      const recorder = current;
      player.tap = (samples, at) => recorder.addModel(samples, at - origin);
    },
    microphone(samples) {
      current?.addMicrophone(samples);
    },
    /** The last finished call as a WAV Blob, or null. */
    blob() {
      return finished ? new Blob([finished.toWav()], { type: "audio/wav" }) : null;
    },
    stop() {
      player.tap = null;
      if (current && !current.empty) finished = current;
      current = null;
      button.hidden = !finished;
    },
  };
}
