/**
 * The queue panel every page shows while waiting: position, a live countdown (queue.js) and a
 * "Leave queue" button. Fed by the server's queue frames; redraws itself once a second. With a
 * player it also chimes when the user reaches the head of the queue and when they are served.
 */
import { chime } from "./audio.js";
import { el } from "./common.js";
import { QueueCountdown, formatSeconds } from "./queue.js";

export class QueuePanel {
  /** @param {HTMLElement} container  @param {{onLeave: () => void, player?: object}} options */
  constructor(container, { onLeave, player = null }) {
    this.player = player;
    this.countdown = new QueueCountdown();
    this.estimateText = null;
    this.label = el("span", { class: "queue-label", role: "status", "aria-live": "polite" });
    this.leaveButton = el("button", { class: "leave-queue", type: "button", onclick: () => onLeave() }, "Leave queue");
    this.root = el("div", { class: "queue-panel", hidden: true }, this.label, this.leaveButton);
    container.append(this.root);
    this.timer = null;
  }

  /** A `queued` / `queue_update` frame arrived. */
  update(frame) {
    if (this.player && Number(frame.position) === 1 && this.countdown.position !== 1) chime(this.player, "near");
    this.countdown.update(frame, Date.now());
    this.estimateText = null;
    this.show();
  }

  /** No queue frames (a gateway that sends none on /ws/chat): show an estimate from /status. */
  estimate(seconds) {
    if (this.countdown.queued) return;
    this.estimateText = seconds == null ? null : `Waiting for a free worker, ~${formatSeconds(seconds)}`;
    if (this.estimateText) this.show();
  }

  get ticketId() {
    return this.countdown.ticketId;
  }

  get queued() {
    return this.countdown.queued || this.estimateText !== null;
  }

  show() {
    this.root.hidden = false;
    this.render();
    if (!this.timer) this.timer = setInterval(() => this.render(), 1000);
  }

  render() {
    this.label.textContent = this.estimateText ?? this.countdown.label(Date.now());
    this.root.dataset.position = this.countdown.position ?? "";
    this.root.dataset.remaining = this.countdown.remaining(Date.now()) ?? "";
  }

  /** A worker took us: chime if we had waited, then hide. */
  served() {
    if (this.player && this.queued) chime(this.player, "turn");
    this.done();
  }

  /** Served, cancelled or failed: hide and forget. */
  done() {
    clearInterval(this.timer);
    this.timer = null;
    this.countdown.reset();
    this.estimateText = null;
    this.root.hidden = true;
  }
}
