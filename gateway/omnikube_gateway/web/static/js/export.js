// The chat page's conversation as the demo exports it (`conversation_<time>.msgpack`):
// {messages: [{role, content: [items]}]} with media as bytes, audio as WAV, and a spoken assistant
// reply as one `text_and_audio` item. Pure: the page encodes the result with MessagePack.

import { INPUT_RATE, OUTPUT_RATE, base64ToBytes, base64ToFloat32, encodeWav } from "./pcm.js";

function item(part) {
  if (part.type === "text") return { type: "text", text: part.text };
  if (part.type === "audio") return { type: "audio", data: encodeWav(base64ToFloat32(part.data), INPUT_RATE) };
  return { type: part.type, data: base64ToBytes(part.data) }; // image, video: the file's own bytes
}

/**
 * @param {{role: string, content: string | object[]}[]} messages  system (if any) then the history
 * @param {Map<object, Float32Array>} spoken  24 kHz speech of the assistant messages that had any
 */
export function conversationForExport(messages, spoken = new Map()) {
  return {
    messages: messages.map((message) => {
      const parts = typeof message.content === "string" ? [{ type: "text", text: message.content }] : message.content;
      const speech = spoken.get(message);
      if (message.role === "assistant" && speech) {
        const text = parts.filter((p) => p.type === "text").map((p) => p.text).join("");
        return { role: message.role, content: [{ type: "text_and_audio", text, audio: encodeWav(speech, OUTPUT_RATE) }] };
      }
      return { role: message.role, content: parts.map(item) };
    }),
  };
}

/** Local time as the demo's download names have it: 2026-12-07T09-05-03 (or 2026-12-07T090503). */
export function localStamp(now = new Date(), timeSeparator = "-") {
  const pad = (n) => String(n).padStart(2, "0");
  const time = [now.getHours(), now.getMinutes(), now.getSeconds()].map(pad).join(timeSeparator);
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}T${time}`;
}

/** `conversation_YYYY-MM-DDTHH-MM-SS.msgpack`, local time, as the demo names it. */
export function exportFileName(now = new Date()) {
  return `conversation_${localStamp(now)}.msgpack`;
}
