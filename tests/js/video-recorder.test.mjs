// Unit tests of the omni page's recording formats and burnt-in subtitle lines (static/js/video-recorder.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { recordingExtension, recordingMime, wrapLines } from "../../gateway/omnikube_gateway/web/static/js/video-recorder.js";

test("auto records the first video format the browser supports, never audio only", () => {
  const supported = new Set(["video/webm;codecs=vp9,opus", "audio/webm;codecs=opus"]);
  assert.equal(recordingMime("auto", (m) => supported.has(m)), "video/webm;codecs=vp9,opus");
  assert.equal(recordingMime("auto", (m) => m.startsWith("audio/")), null);
});

test("a chosen format is used only when the browser supports it", () => {
  assert.equal(recordingMime("video/mp4;codecs=avc1,opus", () => true), "video/mp4;codecs=avc1,opus");
  assert.equal(recordingMime("video/mp4;codecs=avc1,opus", () => false), null);
});

test("the file's extension follows the container", () => {
  assert.equal(recordingExtension("video/mp4;codecs=avc1,opus"), "mp4");
  assert.equal(recordingExtension("video/webm;codecs=vp8,opus"), "webm");
  assert.equal(recordingExtension("audio/webm;codecs=opus"), "webm");
});

test("subtitles wrap at words, Chinese between characters, and keep the last lines", () => {
  const measure = (s) => s.length; // one unit a character
  assert.deepEqual(wrapLines("the quick brown fox jumps", 10, measure), ["the quick", "brown fox", "jumps"]);
  assert.deepEqual(wrapLines("一二三四五六七", 3, measure), ["一二三", "四五六", "七"]);
  assert.deepEqual(wrapLines("a b c d e", 1, measure, 2), ["d", "e"]);
  assert.deepEqual(wrapLines("   ", 10, measure), []);
});
