// Unit tests of the shared queue / countdown module (gateway/omnikube_gateway/web/static/js/queue.js).
// Run with `node --test tests/js` (tests/web/test_js_units.py runs it from pytest).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  QueueCountdown,
  estimateWaitFromStatus,
  findOwnTicket,
  formatSeconds,
} from "../../gateway/omnikube_gateway/web/static/js/queue.js";

const queued = (position, eta, length, extra = {}) => ({
  type: "queued", position, estimated_wait_s: eta, queue_length: length, ...extra,
});

test("the first queue frame starts the countdown at the rounded estimate", () => {
  const c = new QueueCountdown().update(queued(2, 41.4, 3, { ticket_id: "q_1" }), 0);
  assert.equal(c.queued, true);
  assert.equal(c.remaining(0), 41);
  assert.equal(c.ticketId, "q_1");
  assert.equal(c.label(0), "Queue 2/3, ~41s");
});

test("the countdown runs down with the clock between frames", () => {
  const c = new QueueCountdown().update(queued(1, 10, 1), 1_000);
  assert.equal(c.remaining(1_000), 10);
  assert.equal(c.remaining(4_000), 7);
  assert.equal(c.remaining(10_500), 1);
  assert.equal(c.remaining(11_000), 0);
});

test("an update at the same position never makes the countdown go up", () => {
  const c = new QueueCountdown().update(queued(1, 30, 1), 0);
  c.update({ type: "queue_update", position: 1, estimated_wait_s: 60, queue_length: 1 }, 5_000);
  assert.equal(c.remaining(5_000), 25);
  c.update({ type: "queue_update", position: 1, estimated_wait_s: 10, queue_length: 1 }, 6_000);
  assert.equal(c.remaining(6_000), 10);
});

test("moving up the queue restarts the countdown from the new estimate", () => {
  const c = new QueueCountdown().update(queued(2, 20, 2), 0);
  c.update({ type: "queue_update", position: 1, estimated_wait_s: 35, queue_length: 1 }, 3_000);
  assert.equal(c.position, 1);
  assert.equal(c.queueLength, 1);
  assert.equal(c.remaining(3_000), 35);
  assert.equal(c.label(3_000), "Queue 1/1, ~35s");
});

test("past the estimate the label shows the overtime", () => {
  const c = new QueueCountdown().update(queued(1, 2, 1), 0);
  assert.equal(c.label(2_000), "Queue 1/1, overtime +0s");
  assert.equal(c.label(7_400), "Queue 1/1, overtime +5s");
  assert.equal(c.remaining(7_400), -5);
});

test("an update without queue_length keeps the last known length", () => {
  const c = new QueueCountdown().update(queued(3, 9, 4), 0);
  c.update({ type: "queue_update", position: 2, estimated_wait_s: 6 }, 1_000);
  assert.equal(c.label(1_000), "Queue 2/4, ~6s");
});

test("a missing or bad estimate counts as zero rather than NaN", () => {
  const c = new QueueCountdown().update({ position: 1, estimated_wait_s: "soon" }, 0);
  assert.equal(c.remaining(0), 0);
  assert.equal(c.label(0), "Queue 1, overtime +0s");
});

test("reset leaves the queue", () => {
  const c = new QueueCountdown().update(queued(1, 5, 1, { ticket_id: "q_9" }), 0);
  c.reset();
  assert.equal(c.queued, false);
  assert.equal(c.ticketId, null);
  assert.equal(c.remaining(0), null);
  assert.equal(c.label(0), "");
});

test("a status with an idle worker means no wait", () => {
  assert.equal(estimateWaitFromStatus({ idle_workers: 1, queue_length: 0, total_workers: 1 }), null);
});

test("a busy pool with us queued waits for the soonest running task", () => {
  const status = {
    idle_workers: 0, total_workers: 2, queue_length: 1,
    running_tasks: [{ estimated_remaining_s: 40 }, { estimated_remaining_s: 12.4 }],
  };
  assert.equal(estimateWaitFromStatus(status), 12);
});

test("requests ahead of us add one fallback task per round of workers", () => {
  const status = { idle_workers: 0, total_workers: 1, queue_length: 3, running_tasks: [{ estimated_remaining_s: 5 }] };
  assert.equal(estimateWaitFromStatus(status), 5 + 2 * 15);
});

test("a busy pool without running-task estimates falls back to 15 s", () => {
  assert.equal(estimateWaitFromStatus({ idle_workers: 0, total_workers: 1, queue_length: 1 }), 15);
});

test("seconds format short under 100 s and as minutes above", () => {
  assert.equal(formatSeconds(7), "7s");
  assert.equal(formatSeconds(99.4), "99s");
  assert.equal(formatSeconds(125), "2m 05s");
  assert.equal(formatSeconds(-3), "0s");
});

const snapshot = (items) => ({ queue_length: items.length, items });

test("our chat ticket is the one whose wait matches ours", () => {
  const frame = findOwnTicket(snapshot([
    { ticket_id: "q_a", request_type: "chat_ws", session_id: null, position: 1, estimated_wait_s: 12, wait_elapsed_s: 30.2 },
    { ticket_id: "q_b", request_type: "chat_ws", session_id: null, position: 2, estimated_wait_s: 27, wait_elapsed_s: 4.1 },
    { ticket_id: "q_c", request_type: "omni_duplex", session_id: "omni_x", position: 3, estimated_wait_s: 42, wait_elapsed_s: 4.0 },
  ]), { waitedS: 4.6 });
  assert.deepEqual(frame, { position: 2, estimated_wait_s: 27, queue_length: 3, ticket_id: "q_b" });
});

test("no ticket matches when none waited about as long as we did", () => {
  const items = [{ ticket_id: "q_a", request_type: "chat_ws", session_id: null, position: 1, estimated_wait_s: 5, wait_elapsed_s: 60 }];
  assert.equal(findOwnTicket(snapshot(items), { waitedS: 3 }), null);
  assert.equal(findOwnTicket(null, { waitedS: 3 }), null);
});
