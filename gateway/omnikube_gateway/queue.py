"""The FIFO of tickets waiting for a worker (plain data; the dispatcher is its only user).

A ticket id is `q_` + 12 hex digits, as in the original. Each ticket carries the future its
waiter awaits and a `wake` future the dispatcher resolves whenever the ticket's position or ETA
changed enough for its client to be told.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator

from omnikube.protocol import TaskType


def new_ticket_id() -> str:
    return "q_" + uuid.uuid4().hex[:12]


@dataclass
class Ticket:
    ticket_id: str
    task_type: TaskType
    session_id: str | None
    enqueued_at: datetime
    enqueued: float  # monotonic
    future: asyncio.Future = field(repr=False)
    wake: asyncio.Future | None = field(default=None, repr=False)
    position: int = 0
    estimated_wait_s: float = 0.0
    entry_estimated_wait_s: float = 0.0  # what the client was told on entering the queue
    cancelled: bool = False
    max_new_tokens: int | None = None
    # What the client was last told, to decide whether a new estimate is worth a message.
    told_position: int = 0
    told_estimated_wait_s: float = 0.0
    told_at: float = 0.0

    def notify(self) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)


class WaitQueue:
    def __init__(self) -> None:
        self._tickets: OrderedDict[str, Ticket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tickets)

    def __iter__(self) -> Iterator[Ticket]:
        return iter(list(self._tickets.values()))

    def __contains__(self, ticket_id: str) -> bool:
        return ticket_id in self._tickets

    def get(self, ticket_id: str) -> Ticket | None:
        return self._tickets.get(ticket_id)

    def append(self, ticket: Ticket) -> None:
        self._tickets[ticket.ticket_id] = ticket

    def remove(self, ticket_id: str) -> Ticket | None:
        return self._tickets.pop(ticket_id, None)

    def head(self) -> Ticket | None:
        return next(iter(self._tickets.values()), None)
