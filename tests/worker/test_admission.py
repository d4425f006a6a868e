"""WorkerState admission: one session at a time, and waiters served first come, first served."""

from __future__ import annotations

import asyncio

import pytest

from omnikube.protocol import WorkerStatus
from omnikube_worker.state import Busy, WorkerState


def loaded(grace_s: float = 5.0) -> WorkerState:
    state = WorkerState(busy_grace_s=grace_s)
    state.loaded()
    return state


def test_waiters_are_admitted_in_arrival_order_and_a_newcomer_cannot_overtake_them():
    async def scenario() -> list[str]:
        state = loaded()
        first = await state.acquire(WorkerStatus.busy_chat, "first")
        admitted: list[str] = []

        async def wait(name: str) -> None:
            lease = await state.acquire(WorkerStatus.busy_chat, name)
            admitted.append(name)
            await asyncio.sleep(0)
            await lease.release()

        waiters = [asyncio.create_task(wait(f"w{i}")) for i in range(5)]
        await asyncio.sleep(0.01)  # all five are in line
        await first.release()
        late = asyncio.create_task(wait("late"))  # arrives the instant the worker is freed
        await asyncio.gather(*waiters, late)
        return admitted

    assert asyncio.run(scenario()) == ["w0", "w1", "w2", "w3", "w4", "late"]


def test_a_waiter_that_leaves_passes_its_turn_on():
    async def scenario() -> str | None:
        state = loaded()
        first = await state.acquire(WorkerStatus.busy_chat, "first")
        leaving = asyncio.create_task(state.acquire(WorkerStatus.busy_chat, "leaving"))
        staying = asyncio.create_task(state.acquire(WorkerStatus.busy_chat, "staying"))
        await asyncio.sleep(0.01)
        await first.release()
        leaving.cancel()  # its turn came, but it was cancelled before it ran
        lease = await asyncio.wait_for(staying, 1)
        return lease.session_id

    assert asyncio.run(scenario()) == "staying"


def test_a_waiter_is_refused_once_its_grace_is_up():
    async def scenario() -> None:
        state = loaded(grace_s=0.05)
        await state.acquire(WorkerStatus.duplex_active, "holder")
        with pytest.raises(Busy):
            await state.acquire(WorkerStatus.busy_chat, "second")
        assert state.current_session_id == "holder"

    asyncio.run(scenario())
