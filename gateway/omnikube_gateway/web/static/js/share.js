/**
 * "Share" for a recorded session: an optional comment (POST api/sessions/{id}/comment), then the
 * link s/{id} copied to the clipboard, or shown for copying by hand when the clipboard is closed.
 * The button stays disabled until the server has named the recording.
 */
import { api, el, httpUrl, rememberSession } from "./common.js";
import { recordingExtension } from "./video-recorder.js";

const MAX_COMMENT = 2000;

export class ShareButton {
  /** @param {HTMLElement} container  @param {string} appType  (badge on the home page's list) */
  constructor(container, appType) {
    this.appType = appType;
    this.sessionId = null;
    this.button = el("button", { type: "button", class: "share", disabled: true, onclick: () => this.open() }, "Share…");
    this.comment = el("textarea", { rows: 3, maxlength: MAX_COMMENT, "aria-label": "Comment (optional)",
      placeholder: "Comment (optional)" });
    this.result = el("div", { class: "muted", role: "status" });
    this.recording = () => null; // the browser's own recording of the call, a Blob, if there is one
    this.upload = el("input", { type: "checkbox", id: "share-upload", checked: true });
    this.uploadRow = el("label", { class: "inline", hidden: true }, this.upload, " Include my recording of this call");
    this.dialog = el("dialog", { class: "panel", "aria-label": "Share conversation" },
      el("h2", {}, "Share conversation"),
      el("p", { class: "muted" }, "Anyone with the link can replay this recording."),
      this.comment, this.uploadRow, this.result,
      el("div", { class: "row" },
        el("button", { type: "button", class: "primary", onclick: () => this.share() }, "Share"),
        el("button", { type: "button", onclick: () => this.dialog.close() }, "Close")));
    container.append(this.button, this.dialog);
  }

  /** The server named the recording of the current session. */
  setSession(sessionId) {
    this.sessionId = sessionId;
    this.button.disabled = !sessionId;
  }

  get link() {
    return httpUrl(`s/${encodeURIComponent(this.sessionId)}`);
  }

  /** `recording()` returns the browser's recording of the current call (a Blob) or null. */
  setRecording(recording) {
    this.recording = recording;
  }

  open() {
    this.result.textContent = "";
    this.uploadRow.hidden = !this.recording();
    this.dialog.showModal();
  }

  async share() {
    const text = this.comment.value.trim();
    try {
      if (text) await api(`api/sessions/${encodeURIComponent(this.sessionId)}/comment`, { method: "POST", body: { comment: text } });
    } catch (error) {
      this.result.textContent = `Comment not saved: ${error.message}`;
      return;
    }
    const recording = this.upload.checked ? this.recording() : null;
    if (recording) {
      const form = new FormData();
      // The part's type says what it is (the gateway stores frontend_replay.<its extension>).
      const ext = recording.type.startsWith("audio/wav") ? "wav" : recordingExtension(recording.type);
      form.append("file", recording, `recording.${ext}`);
      try {
        await api(`api/sessions/${encodeURIComponent(this.sessionId)}/upload-recording`, { method: "POST", body: form });
      } catch (error) {
        this.result.textContent = `Recording not uploaded: ${error.message}`;
        return;
      }
    }
    rememberSession(this.sessionId, this.appType);
    try {
      await navigator.clipboard.writeText(this.link);
      this.result.replaceChildren("Link copied: ", el("a", { href: this.link, target: "_blank" }, this.link));
    } catch {
      this.result.replaceChildren("Copy this link: ", el("input", { type: "text", readonly: true, value: this.link }));
    }
  }
}
