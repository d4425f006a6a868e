// Unit tests of the browser's call recording (static/js/recorder.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { StereoRecorder } from "../../gateway/omnikube_gateway/web/static/js/recorder.js";

function channels(wav) {
  const view = new DataView(wav.buffer);
  assert.equal(view.getUint16(22, true), 2);
  assert.equal(view.getUint32(24, true), 24000);
  const frames = view.getUint32(40, true) / 4;
  const left = [], right = [];
  for (let i = 0; i < frames; i++) {
    left.push(view.getInt16(44 + i * 4, true));
    right.push(view.getInt16(46 + i * 4, true));
  }
  return { left, right };
}

test("the microphone runs back to back on the left, resampled from 16 to 24 kHz", () => {
  const rec = new StereoRecorder();
  rec.addMicrophone(new Float32Array(16000).fill(0.5));
  rec.addMicrophone(new Float32Array(8000).fill(0.25));
  const { left, right } = channels(rec.toWav());
  assert.equal(left.length, 36000);
  assert.equal(left[100], Math.round(0.5 * 32767));
  assert.equal(left[30000], Math.round(0.25 * 32767));
  assert.ok(right.every((s) => s === 0));
});

test("the model's speech lands on the right at the time it played, and lengthens the file", () => {
  const rec = new StereoRecorder();
  rec.addMicrophone(new Float32Array(16000));
  rec.addModel(new Float32Array(2400).fill(-0.5), 1.5);
  const { left, right } = channels(rec.toWav());
  assert.equal(left.length, 24000 * 1.5 + 2400);
  assert.equal(right[36000 - 1], 0);
  assert.equal(right[36000], Math.round(-0.5 * 32767));
  assert.equal(right[36000 + 2399], Math.round(-0.5 * 32767));
});

test("a call with nothing recorded is empty", () => {
  assert.ok(new StereoRecorder().empty);
});
