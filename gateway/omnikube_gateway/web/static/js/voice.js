/**
 * Reference voice picker shared by the chat and duplex pages.
 *
 * Choices: the server's default voice (GET /api/default_ref_audio), the voices of the mode's presets
 * (GET /api/presets, audio fetched lazily from /api/presets/{mode}/{id}/audio), or a clip the user
 * uploads (decoded in the browser to 16 kHz mono float32, at most 20 s). `value` is what goes on the
 * wire: base64 float32 16 kHz, or null to let the worker use its own default.
 */
import { api, el } from "./common.js";
import { decodeClip } from "./audio.js";
import { INPUT_RATE, base64ToFloat32, encodeWav, float32ToBase64 } from "./pcm.js";

const MAX_REF_SECONDS = 20;

export class VoicePicker {
  /**
   * @param {HTMLElement} container
   * @param {{mode: string, label?: string, onPreset?: (preset: object) => void, sameAs?: string}} options
   *   `sameAs`: a second picker (the TTS's voice) whose first choice is "Same as <sameAs>" (value
   *   null: nothing separate is sent); it offers the default voice and uploads, not presets.
   */
  constructor(container, { mode, label = "Reference voice (voice cloning)", onPreset, sameAs } = {}) {
    this.mode = mode;
    this.onPreset = onPreset;
    this.sameAs = sameAs;
    this.voices = new Map(); // option value -> {name, base64|null, load?: () => Promise<string|null>}
    this.select = el("select", { "aria-label": label, onchange: () => this.choose(this.select.value) });
    this.file = el("input", { type: "file", accept: "audio/*", hidden: true,
      onchange: () => this.upload(this.file.files[0]) });
    this.preview = el("audio", { controls: true, hidden: true });
    this.status = el("div", { class: "muted" });
    container.append(
      el("label", {}, label),
      el("div", { class: "row" }, this.select,
        el("button", { type: "button", onclick: () => this.file.click() }, "Upload voice…")),
      this.file, this.preview, this.status);
    this.current = null;
    this.ready = this.load();
  }

  /** The chosen voice as wire base64, or null for the worker's default. */
  get value() {
    return this.current?.base64 ?? null;
  }

  get name() {
    return this.current?.name ?? "worker default";
  }

  async load() {
    if (this.sameAs) this.add("same", { name: `Same as ${this.sameAs}`, base64: null });
    this.add("default", { name: "Server default voice", base64: null });
    try {
      const ref = await api("api/default_ref_audio");
      this.add("default", { name: `Default: ${ref.name} (${ref.duration}s)`, base64: ref.base64 });
    } catch (error) {
      this.status.textContent = `Default voice not loaded (${error.message}); the worker will use its own.`;
    }
    if (this.sameAs) {
      await this.choose("same");
      return;
    }
    try {
      const presets = (await api("api/presets"))[this.mode] ?? [];
      for (const preset of presets) {
        if (!preset.ref_audio && !preset.system_content && !preset.system_prompt) continue;
        this.add(`preset:${preset.id}`, { name: `Preset: ${preset.name}`, preset, base64: null });
      }
    } catch {
      /* presets are optional */
    }
    await this.choose("default");
  }

  add(key, voice) {
    this.voices.set(key, voice);
    let option = [...this.select.options].find((o) => o.value === key);
    if (!option) {
      option = el("option", { value: key });
      this.select.append(option);
    }
    option.textContent = voice.name;
  }

  async choose(key) {
    const voice = this.voices.get(key);
    if (!voice) return;
    this.select.value = key;
    if (voice.preset) {
      this.onPreset?.(voice.preset);
      if (!voice.base64) await this.loadPresetAudio(voice);
    }
    this.current = voice;
    this.showPreview(voice.base64);
  }

  async loadPresetAudio(voice) {
    this.status.textContent = "Loading preset voice…";
    try {
      const media = await api(`api/presets/${encodeURIComponent(this.mode)}/${encodeURIComponent(voice.preset.id)}/audio`);
      voice.base64 = media.ref_audio?.data ?? media.system_content_audio?.find((a) => a.data)?.data ?? null;
      this.status.textContent = voice.base64 ? "" : "This preset has no voice; the worker default is used.";
    } catch (error) {
      this.status.textContent = `Preset voice not loaded: ${error.message}`;
    }
  }

  async upload(file) {
    if (!file) return;
    this.status.textContent = `Decoding ${file.name}…`;
    try {
      const { samples, seconds } = await decodeClip(file, MAX_REF_SECONDS);
      const key = `upload:${file.name}`;
      this.add(key, { name: `Uploaded: ${file.name} (${seconds.toFixed(1)}s)`, base64: float32ToBase64(samples) });
      await this.choose(key);
      this.status.textContent = "";
    } catch (error) {
      this.status.textContent = error.message.startsWith("Audio too long") ? error.message : `Cannot use ${file.name}: ${error.message}`;
    } finally {
      this.file.value = "";
    }
  }

  showPreview(base64) {
    if (this.preview.src) URL.revokeObjectURL(this.preview.src);
    if (!base64) {
      this.preview.hidden = true;
      this.preview.removeAttribute("src");
      return;
    }
    const wav = encodeWav(base64ToFloat32(base64), INPUT_RATE);
    this.preview.src = URL.createObjectURL(new Blob([wav], { type: "audio/wav" }));
    this.preview.hidden = false;
  }
}
