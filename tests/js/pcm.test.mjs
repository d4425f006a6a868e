// Unit tests of the PCM helpers and the gapless playback schedule (static/js/pcm.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  PlaybackSchedule,
  base64ToFloat32,
  downmix,
  encodeWav,
  float32ToBase64,
  resampleLinear,
} from "../../gateway/omnikube_gateway/web/static/js/pcm.js";

test("float32 audio survives the base64 wire encoding bit for bit", () => {
  const samples = new Float32Array([0, 0.5, -0.25, 1, -1, 1e-7]);
  const b64 = float32ToBase64(samples);
  assert.deepEqual(base64ToFloat32(b64), samples);
});

test("the wire encoding is little-endian float32 (what the worker decodes)", () => {
  // 1.0f little-endian is 00 00 80 3f.
  assert.equal(float32ToBase64(new Float32Array([1])), Buffer.from([0, 0, 0x80, 0x3f]).toString("base64"));
});

test("a large chunk encodes without blowing the argument limit", () => {
  const big = new Float32Array(16000 * 10).fill(0.1);
  assert.equal(base64ToFloat32(float32ToBase64(big)).length, big.length);
});

test("a payload that is not a whole number of float32 samples is rejected", () => {
  assert.throws(() => base64ToFloat32(Buffer.from([1, 2, 3]).toString("base64")), /not float32/);
});

test("resampling 24 kHz to 16 kHz keeps duration and shape", () => {
  const src = new Float32Array(2400).map((_, i) => Math.sin((2 * Math.PI * 200 * i) / 24000));
  const out = resampleLinear(src, 24000, 16000);
  assert.equal(out.length, 1600);
  const expected = Math.sin((2 * Math.PI * 200 * 100) / 16000);
  assert.ok(Math.abs(out[100] - expected) < 0.01);
});

test("downmixing averages the channels", () => {
  const left = new Float32Array([1, 0]);
  const right = new Float32Array([0, 1]);
  const buf = { numberOfChannels: 2, getChannelData: (c) => (c ? right : left) };
  assert.deepEqual(downmix(buf), new Float32Array([0.5, 0.5]));
});

test("a WAV file has a RIFF header, the rate and 16-bit samples", () => {
  const wav = encodeWav(new Float32Array([0, 1, -1]), 24000);
  const view = new DataView(wav.buffer);
  assert.equal(String.fromCharCode(...wav.subarray(0, 4)), "RIFF");
  assert.equal(view.getUint32(24, true), 24000);
  assert.equal(view.getUint32(40, true), 6);
  assert.equal(view.getInt16(46, true), 32767);
  assert.equal(view.getInt16(48, true), -32767);
});

test("the first chunk of a turn waits for the playback delay", () => {
  const s = new PlaybackSchedule({ delayMs: 200 });
  assert.equal(s.place(1, 10), 10.2);
});

test("chunks of one turn play back to back without gaps", () => {
  const s = new PlaybackSchedule({ delayMs: 200 });
  const a = s.place(1, 10);
  const b = s.place(1, 10.9);
  const c = s.place(0.5, 11.8);
  assert.equal(b, a + 1);
  assert.equal(c, b + 1);
  assert.equal(s.gaps, 0);
  assert.ok(Math.abs(s.aheadS(11.8) - 0.9) < 1e-9);
});

test("a late chunk starts at once and is counted as a gap", () => {
  const s = new PlaybackSchedule({ delayMs: 0 });
  s.place(1, 0); // ends at 1
  const start = s.place(1, 1.5);
  assert.equal(start, 1.5);
  assert.equal(s.gaps, 1);
  assert.ok(Math.abs(s.shiftS - 0.5) < 1e-9);
});

test("a new turn waits for the delay again but never overlaps the previous tail", () => {
  const s = new PlaybackSchedule({ delayMs: 200 });
  s.place(2, 0); // 0.2 .. 2.2
  s.endTurn();
  assert.equal(s.place(1, 1), 2.2);
  s.endTurn();
  assert.equal(s.place(1, 5), 5.2);
  assert.equal(s.gaps, 0);
});

test("clearing the schedule drops the queued audio", () => {
  const s = new PlaybackSchedule({ delayMs: 100 });
  s.place(3, 0);
  s.clear();
  assert.equal(s.aheadS(1), 0);
  assert.equal(s.place(1, 1), 1.1);
});
