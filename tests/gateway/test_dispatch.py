"""The dispatcher and its queue, in process, with workers that exist only in the registry."""

from __future__ import annotations

import asyncio

import pytest

from omnikube.protocol import TaskType
from omnikube_gateway.dispatch import Dispatcher, QueueCancelled, QueueFull, QueueTimeout, QueueUpdate
from omnikube_gateway.eta import ResidualEstimator, Running
from omnikube_gateway.registry import WorkerRegistry
from tests.fixtures.gateway import health_report, until

BASELINES = {TaskType.chat: 10.0, TaskType.streaming: 20.0, TaskType.half_duplex: 180.0,
             TaskType.audio_duplex: 120.0, TaskType.omni_duplex: 90.0}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(workers: int = 1, *, max_queue_size: int = 10, timeout: float = 30.0, clock: Clock | None = None):
    clock = clock or Clock()
    registry = WorkerRegistry(clock=clock)
    dispatcher = Dispatcher(registry, ResidualEstimator(BASELINES), max_queue_size=max_queue_size, queue_timeout=timeout, clock=clock)
    for i in range(workers):
        registry.upsert(f"worker_{i}", "127.0.0.1", 22400 + i, i)
        registry.apply_probe(f"worker_{i}", clock(), health_report("idle"))
    return dispatcher, registry, clock


async def hold(dispatcher, task_type=TaskType.chat, release: asyncio.Event | None = None, updates=None, session_id=None, got=None):
    async def on_update(update: QueueUpdate) -> None:
        if updates is not None:
            updates.append(update)

    async with dispatcher.lease(task_type, on_update=on_update, session_id=session_id) as lease:
        if got is not None:
            got.append(lease)
        if release is not None:
            await release.wait()
        return lease


async def occupy(dispatcher, registry, task_type=TaskType.chat) -> tuple[asyncio.Event, asyncio.Task]:
    """Hold worker_0 until the returned event is set."""
    gate = asyncio.Event()
    task = asyncio.create_task(hold(dispatcher, task_type, release=gate))
    await until(lambda: not registry.get("worker_0").available, "worker_0 leased")
    return gate, task


async def test_an_idle_worker_is_leased_at_once_and_released_after_the_block():
    dispatcher, registry, _ = make(1)
    async with dispatcher.lease(TaskType.chat) as lease:
        assert lease.worker_id == "worker_0"
        assert lease.http_url == "http://127.0.0.1:22400" and lease.ws_url == "ws://127.0.0.1:22400"
        assert registry.get("worker_0").status == "busy_chat"
    assert registry.get("worker_0").available


async def test_waiting_tickets_are_served_in_arrival_order():
    dispatcher, registry, _ = make(1)
    gate, first = await occupy(dispatcher, registry)
    served: list[str] = []

    async def waiter(name: str) -> None:
        async with dispatcher.lease(TaskType.chat):
            served.append(name)

    tasks = []
    for name in "abc":
        tasks.append(asyncio.create_task(waiter(name)))
        await until(lambda: len(dispatcher.queue) == len(tasks), f"{name} queued")
    gate.set()
    await asyncio.gather(first, *tasks)
    assert served == ["a", "b", "c"]


async def test_a_queued_client_is_told_its_position_on_entry_and_whenever_it_moves():
    dispatcher, registry, _ = make(1)
    gate, first = await occupy(dispatcher, registry)
    second_gate = asyncio.Event()
    second = asyncio.create_task(hold(dispatcher, release=second_gate))
    await until(lambda: len(dispatcher.queue) == 1, "second queued")
    updates: list[QueueUpdate] = []
    third = asyncio.create_task(hold(dispatcher, updates=updates))
    await until(lambda: updates, "first update")
    assert (updates[0].position, updates[0].queue_length) == (2, 2)
    assert updates[0].ticket_id.startswith("q_") and len(updates[0].ticket_id) == 14
    gate.set()
    await until(lambda: any(u.position == 1 for u in updates), "moved to position 1")
    second_gate.set()
    await asyncio.gather(first, second, third)
    assert [u.position for u in updates] == [2, 1]


async def test_eta_of_a_queued_ticket_counts_the_running_session_s_elapsed_time():
    dispatcher, registry, clock = make(1)
    gate, first = await occupy(dispatcher, registry, TaskType.omni_duplex)
    clock.now += 30.0  # the running omni session (baseline 90 s) is 30 s old
    updates: list[QueueUpdate] = []
    waiter = asyncio.create_task(hold(dispatcher, TaskType.chat, updates=updates))
    await until(lambda: updates, "queued update")
    thirty_s_old = dispatcher.estimator.queue_waits([Running(TaskType.omni_duplex, 30.0)], [TaskType.chat])[-1]
    assert updates[0].estimated_wait_s == thirty_s_old != dispatcher.estimator.queue_waits([Running(TaskType.omni_duplex, 0.0)], [TaskType.chat])[-1]
    gate.set()
    await asyncio.gather(first, waiter)


async def test_a_full_queue_refuses_with_a_retry_after():
    dispatcher, registry, _ = make(1, max_queue_size=1)
    gate, first = await occupy(dispatcher, registry)
    second = asyncio.create_task(hold(dispatcher))
    await until(lambda: len(dispatcher.queue) == 1, "second queued")
    with pytest.raises(QueueFull) as info:
        async with dispatcher.lease(TaskType.chat):
            pass
    assert info.value.retry_after >= 1 and "Queue full (1 requests)" in str(info.value)
    gate.set()
    await asyncio.gather(first, second)


async def test_a_client_that_leaves_while_queued_frees_its_place_at_once():
    dispatcher, registry, _ = make(1)
    gate, first = await occupy(dispatcher, registry)
    leaver = asyncio.create_task(hold(dispatcher))
    await until(lambda: len(dispatcher.queue) == 1, "queued")
    leaver.cancel()
    await asyncio.gather(leaver, return_exceptions=True)
    assert len(dispatcher.queue) == 0
    gate.set()
    await first
    assert registry.get("worker_0").available


async def test_a_client_cancelled_in_the_instant_of_assignment_does_not_leak_the_worker():
    dispatcher, registry, _ = make(1)
    first = dispatcher.lease(TaskType.chat)
    await first.__aenter__()
    unlucky = asyncio.create_task(hold(dispatcher))
    await until(lambda: len(dispatcher.queue) == 1, "queued")
    await first.__aexit__(None, None, None)  # assigns worker_0 to the waiting ticket, synchronously ...
    assert registry.get("worker_0").session is not None
    unlucky.cancel()  # ... and its client vanishes before the waiter ever ran again
    await asyncio.gather(unlucky, return_exceptions=True)
    assert registry.get("worker_0").available, "worker leaked as busy"


async def test_an_exception_inside_the_lease_still_releases_the_worker():
    dispatcher, registry, _ = make(1)
    with pytest.raises(RuntimeError):
        async with dispatcher.lease(TaskType.half_duplex):
            raise RuntimeError("relay broke")
    assert registry.get("worker_0").available


async def test_a_ticket_that_waits_longer_than_the_timeout_gets_queue_timeout():
    dispatcher, registry, _ = make(1, timeout=0.05, clock=None)
    dispatcher._clock = __import__("time").monotonic
    gate, first = await occupy(dispatcher, registry)
    with pytest.raises(QueueTimeout):
        async with dispatcher.lease(TaskType.chat):
            pass
    assert len(dispatcher.queue) == 0
    gate.set()
    await first


async def test_an_admin_cancel_ends_the_wait_with_queue_cancelled():
    dispatcher, registry, _ = make(1)
    gate, first = await occupy(dispatcher, registry)
    updates: list[QueueUpdate] = []
    waiter = asyncio.create_task(hold(dispatcher, updates=updates))
    await until(lambda: updates, "queued")
    assert dispatcher.cancel(updates[0].ticket_id) is True
    with pytest.raises(QueueCancelled):
        await waiter
    assert dispatcher.cancel(updates[0].ticket_id) is False
    gate.set()
    await first


async def test_a_failed_session_takes_the_worker_out_and_does_not_feed_the_eta():
    dispatcher, registry, clock = make(1)
    async with dispatcher.lease(TaskType.chat) as lease:
        clock.now += 500.0
        lease.fail("connection reset")
    worker = registry.get("worker_0")
    assert not worker.available and worker.status == "offline"
    assert dispatcher.estimator.stats[TaskType.chat].samples == 0
    registry.apply_probe("worker_0", clock(), health_report("idle"))  # the health probe re-admits it
    assert worker.available


async def test_paused_time_is_not_counted_in_the_eta_sample():
    dispatcher, registry, clock = make(1)
    async with dispatcher.lease(TaskType.omni_duplex) as lease:
        clock.now += 10.0
        lease.pause()
        assert registry.get("worker_0").status == "duplex_paused"
        clock.now += 50.0
        lease.resume()
        clock.now += 5.0
    assert list(dispatcher.estimator.stats[TaskType.omni_duplex].window) == [pytest.approx(15.0)]


async def test_a_drained_worker_takes_no_new_work_but_keeps_its_session():
    dispatcher, registry, _ = make(2)
    async with dispatcher.lease(TaskType.chat) as lease:
        assert lease.worker_id == "worker_0"
        registry.upsert("worker_0", "127.0.0.1", 22400, 0, draining=True)
        assert registry.get("worker_0").session is not None
        async with dispatcher.lease(TaskType.chat) as other:
            assert other.worker_id == "worker_1"
    assert not registry.get("worker_0").available


async def test_a_returning_session_id_prefers_the_worker_that_served_it():
    dispatcher, registry, _ = make(2)
    async with dispatcher.lease(TaskType.half_duplex, session_id="hdx_a"):
        async with dispatcher.lease(TaskType.half_duplex, session_id="hdx_b") as b:
            assert b.worker_id == "worker_1"
    async with dispatcher.lease(TaskType.half_duplex, session_id="hdx_b") as again:
        assert again.worker_id == "worker_1"


async def test_a_lagging_busy_probe_sent_before_release_does_not_hide_a_free_worker():
    dispatcher, registry, clock = make(1)
    sent_at = clock()
    async with dispatcher.lease(TaskType.chat):
        clock.now += 1.0
    registry.apply_probe("worker_0", sent_at, health_report("busy_chat"))
    assert registry.get("worker_0").available


async def test_a_chat_s_budget_is_its_max_new_tokens_at_the_pace_its_worker_reports():
    dispatcher, registry, clock = make(2)
    registry.apply_probe("worker_0", clock(), health_report("idle", generation_overhead_ms=500.0, ms_per_token=100.0))
    registry.apply_probe("worker_1", clock(), health_report("idle", generation_overhead_ms=300.0, ms_per_token=50.0))
    async with dispatcher.lease(TaskType.chat, max_new_tokens=20) as lease:
        assert lease.worker_id == "worker_0"
        running = dispatcher._capacity()
        assert running[0] == Running(TaskType.chat, 0.0, budget_s=2.5) and running[1] is None
        # A queued ticket's worker is not known yet: the mean pace of the workers that report one.
        assert dispatcher._budget(10) == pytest.approx((400.0 + 10 * 75.0) / 1000)
    async with dispatcher.lease(TaskType.omni_duplex):
        assert dispatcher._capacity()[0] == Running(TaskType.omni_duplex, 0.0)  # no tokens asked: no budget
