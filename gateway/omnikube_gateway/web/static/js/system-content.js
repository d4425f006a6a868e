/**
 * The multimodal system content of the chat and half-duplex pages (the demo's "system content"
 * editor): after the system prompt's text box and its voice, an ordered list of more text items
 * and audio items, each added, deleted or moved up and down. An audio item is a file decoded in
 * the browser to 16 kHz mono float32, as every upload. What goes on the wire is
 * `systemContent(text, voice, extra)`: the protocol's list of {type: "text", text} and
 * {type: "audio", data} items, in order (pure, so the pages and the tests build it alike).
 */
import { el } from "./common.js";
import { decodeClip } from "./audio.js";
import { INPUT_RATE, encodeWav, float32ToBase64 } from "./pcm.js";

const MAX_AUDIO_SECONDS = 60;

/** The system content list: the prompt's text, its voice (base64 or null), then the editor's items. */
export function systemContent(text, voice, extra = []) {
  const items = [];
  if (text) items.push({ type: "text", text });
  if (voice) items.push({ type: "audio", data: voice });
  return [...items, ...extra];
}

export class SystemContentEditor {
  /** @param {HTMLElement} container */
  constructor(container) {
    this.entries = []; // {type: "text", input} | {type: "audio", name, data, url}
    this.list = el("ol", { class: "system-content" });
    this.file = el("input", { type: "file", accept: "audio/*", hidden: true, "aria-label": "System content audio",
      onchange: () => this.addAudio(this.file.files[0]) });
    this.status = el("div", { class: "muted", role: "status" });
    container.append(
      el("label", {}, "More system content (sent in this order, after the prompt and its voice)"),
      this.list,
      el("div", { class: "row" },
        el("button", { type: "button", class: "add-text", onclick: () => this.addText() }, "+ Text"),
        el("button", { type: "button", class: "add-audio", onclick: () => this.file.click() }, "+ Audio…")),
      this.file, this.status);
  }

  /** The editor's items as wire items, in order (empty texts left out). */
  items() {
    return this.entries.flatMap((e) => {
      if (e.type === "audio") return [{ type: "audio", data: e.data }];
      const text = e.input.value.trim();
      return text ? [{ type: "text", text }] : [];
    });
  }

  addText(text = "") {
    const input = el("textarea", { rows: 2, "aria-label": "System content text" });
    input.value = text;
    this.entries.push({ type: "text", input });
    this.render();
    input.focus();
  }

  async addAudio(file) {
    if (!file) return;
    this.status.textContent = `Decoding ${file.name}…`;
    try {
      const { samples, seconds } = await decodeClip(file, MAX_AUDIO_SECONDS);
      const url = URL.createObjectURL(new Blob([encodeWav(samples, INPUT_RATE)], { type: "audio/wav" }));
      this.entries.push({ type: "audio", name: `${file.name} (${seconds.toFixed(1)}s)`, data: float32ToBase64(samples), url });
      this.status.textContent = "";
      this.render();
    } catch (error) {
      this.status.textContent = `Cannot use ${file.name}: ${error.message}`;
    } finally {
      this.file.value = "";
    }
  }

  move(index, by) {
    const to = index + by;
    if (to < 0 || to >= this.entries.length) return;
    [this.entries[index], this.entries[to]] = [this.entries[to], this.entries[index]];
    this.render();
  }

  remove(index) {
    const [gone] = this.entries.splice(index, 1);
    if (gone?.url) URL.revokeObjectURL(gone.url);
    this.render();
  }

  clear() {
    while (this.entries.length) this.remove(0);
  }

  render() {
    const last = this.entries.length - 1;
    this.list.replaceChildren(...this.entries.map((entry, i) =>
      el("li", { dataset: { type: entry.type } },
        entry.type === "text" ? entry.input
          : el("span", { class: "audio-item" }, `🔊 ${entry.name}`, el("audio", { controls: true, src: entry.url })),
        el("button", { type: "button", class: "up", title: "Move up", "aria-label": "Move up", disabled: i === 0,
          onclick: () => this.move(i, -1) }, "↑"),
        el("button", { type: "button", class: "down", title: "Move down", "aria-label": "Move down", disabled: i === last,
          onclick: () => this.move(i, 1) }, "↓"),
        el("button", { type: "button", class: "delete", title: "Delete", "aria-label": "Delete",
          onclick: () => this.remove(i) }, "✕"))));
  }
}
