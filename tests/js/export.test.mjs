// Unit tests of the chat page's conversation export (static/js/export.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { conversationForExport, exportFileName } from "../../gateway/omnikube_gateway/web/static/js/export.js";
import { float32ToBase64 } from "../../gateway/omnikube_gateway/web/static/js/pcm.js";

const ascii = (bytes, start, end) => String.fromCharCode(...bytes.slice(start, end));

test("a spoken answer is one text_and_audio item with its speech as a 24 kHz WAV", () => {
  const answer = { role: "assistant", content: "Hello." };
  const { messages } = conversationForExport([{ role: "user", content: "Hi" }, answer],
    new Map([[answer, new Float32Array(2400)]]));
  assert.deepEqual(messages[0], { role: "user", content: [{ type: "text", text: "Hi" }] });
  const [item] = messages[1].content;
  assert.equal(item.type, "text_and_audio");
  assert.equal(item.text, "Hello.");
  assert.equal(ascii(item.audio, 0, 4), "RIFF");
  assert.equal(new DataView(item.audio.buffer).getUint32(24, true), 24000);
  assert.equal(item.audio.length, 44 + 2400 * 2);
});

test("user audio becomes a 16 kHz WAV and images keep their own bytes", () => {
  const png = Buffer.from([0x89, 0x50, 0x4e, 0x47]).toString("base64");
  const { messages } = conversationForExport([{ role: "user", content: [
    { type: "image", data: png }, { type: "audio", data: float32ToBase64(new Float32Array(160)) },
    { type: "text", text: "What is this?" }] }]);
  const [image, audio, text] = messages[0].content;
  assert.deepEqual([...image.data], [0x89, 0x50, 0x4e, 0x47]);
  assert.equal(new DataView(audio.data.buffer).getUint32(24, true), 16000);
  assert.deepEqual(text, { type: "text", text: "What is this?" });
});

test("the file is named after the local time, as the demo names it", () => {
  assert.equal(exportFileName(new Date(2026, 11, 7, 9, 5, 3)), "conversation_2026-12-07T09-05-03.msgpack");
});
