/**
 * Queue position and wait countdown, shared by every page.
 *
 * Pure logic, no DOM and no timers: callers pass the current time in milliseconds, so node's test
 * runner can drive it. The server pushes `queued` / `queue_update` frames (position, estimated wait,
 * queue length) whenever the queue moves; between pushes the page redraws once a second.
 *
 * Rules (the seed's countdown, kept so users see the same numbers):
 * - the first update starts the countdown at round(estimated_wait_s);
 * - a later update with a new position restarts it at the new estimate;
 * - a later update with the same position may only shorten it (never counts up);
 * - past zero it shows how long the wait has overrun ("overtime").
 * Unlike the seed, the countdown is anchored to wall-clock time rather than counted by a 1 s
 * timer, so a throttled background tab still shows the right number when it wakes.
 */

/** Seconds per queued task used when /status gives nothing better (the seed's constant). */
export const FALLBACK_TASK_S = 15;

export class QueueCountdown {
  constructor() {
    this.reset();
  }

  /** Forget everything: the client left the queue or was served. */
  reset() {
    this.position = null;
    this.queueLength = null;
    this.ticketId = null;
    this.deadlineMs = null;
    this.updates = 0;
  }

  /** True while the client holds a place in the queue. */
  get queued() {
    return this.position !== null;
  }

  /**
   * Apply one queue frame (`queued` or `queue_update`) received at `nowMs`.
   * Accepts the wire names (`estimated_wait_s`, `queue_length`, `ticket_id`).
   */
  update(frame, nowMs) {
    const position = toInt(frame.position);
    const eta = Math.max(0, Math.round(Number(frame.estimated_wait_s) || 0));
    const newDeadline = nowMs + eta * 1000;
    if (this.deadlineMs === null || position !== this.position) {
      this.deadlineMs = newDeadline;
    } else {
      this.deadlineMs = Math.min(this.deadlineMs, newDeadline);
    }
    this.position = position;
    if (frame.queue_length !== undefined && frame.queue_length !== null) {
      this.queueLength = toInt(frame.queue_length);
    }
    if (frame.ticket_id) this.ticketId = String(frame.ticket_id);
    this.updates += 1;
    return this;
  }

  /** Whole seconds left at `nowMs`; negative once the estimate has been overrun. */
  remaining(nowMs) {
    if (this.deadlineMs === null) return null;
    const ms = this.deadlineMs - nowMs;
    // Round towards the deadline so the display reaches 0 exactly when the estimate expires.
    return ms >= 0 ? Math.ceil(ms / 1000) : -Math.floor(-ms / 1000);
  }

  /** "Queue 2/3, ~41s" while waiting, "Queue 1/1, overtime +5s" after the estimate passed. */
  label(nowMs) {
    if (!this.queued) return "";
    const where = this.queueLength ? `${this.position}/${this.queueLength}` : `${this.position}`;
    const left = this.remaining(nowMs);
    if (left > 0) return `Queue ${where}, ~${formatSeconds(left)}`;
    return `Queue ${where}, overtime +${formatSeconds(-left)}`;
  }
}

/**
 * Estimate the wait of a chat request from a `/status` body, for a gateway that sends no queue
 * frames on /ws/chat (the seed's did not). Returns null when a worker is idle (no wait).
 * Shape: the soonest running task to finish, plus one fallback task per round of requests ahead.
 */
export function estimateWaitFromStatus(status) {
  if (!status || Number(status.idle_workers) > 0) return null;
  const queueLength = Math.max(0, toInt(status.queue_length) || 0);
  if (queueLength === 0) return null;
  const running = Array.isArray(status.running_tasks) ? status.running_tasks : [];
  const remainders = running
    .map((t) => Number(t.estimated_remaining_s))
    .filter((s) => Number.isFinite(s));
  const first = remainders.length ? Math.min(...remainders) : FALLBACK_TASK_S;
  const workers = Math.max(1, toInt(status.total_workers) || running.length || 1);
  // We are assumed last in line: everyone ahead of us shares the workers.
  const ahead = Math.floor((queueLength - 1) / workers);
  return Math.max(1, Math.round(first + ahead * FALLBACK_TASK_S));
}

/**
 * Find our own ticket in a GET /api/queue snapshot when the socket carries no queue frames
 * (/ws/chat): the waiting chat ticket whose wait so far best matches how long we have waited.
 * Returns a queue frame ({position, estimated_wait_s, queue_length, ticket_id}) or null.
 */
export function findOwnTicket(snapshot, { waitedS, types = ["chat_ws", "chat"], toleranceS = 2.5 }) {
  const items = Array.isArray(snapshot?.items) ? snapshot.items : [];
  let best = null;
  for (const item of items) {
    if (!types.includes(item.request_type) || item.session_id) continue;
    const off = Math.abs(Number(item.wait_elapsed_s) - waitedS);
    if (off <= toleranceS && (best === null || off < best.off)) best = { item, off };
  }
  if (!best) return null;
  return {
    position: best.item.position,
    estimated_wait_s: best.item.estimated_wait_s,
    queue_length: snapshot.queue_length ?? items.length,
    ticket_id: best.item.ticket_id,
  };
}

/** 75 -> "75s", 125 -> "2m 05s": short enough for a status lamp. */
export function formatSeconds(total) {
  const s = Math.max(0, Math.round(total));
  if (s < 100) return `${s}s`;
  const m = Math.floor(s / 60);
  return `${m}m ${String(s % 60).padStart(2, "0")}s`;
}

function toInt(value) {
  const n = Number.parseInt(value, 10);
  return Number.isNaN(n) ? null : n;
}
