"""Server-sent events fan-out: drone, task and message changes to every cockpit.

Events live in memory only: a bounded ring lets a cockpit that reconnects
with ``Last-Event-ID`` catch up on what it missed while the relay ran; after
a relay restart ids start over and a cockpit reloads its lists.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

RING = 2000
QUEUE = 1000


@dataclass(frozen=True)
class BusEvent:
    id: int
    kind: str  # drone | task | message
    data: dict[str, Any]

    def encode(self) -> bytes:
        payload = json.dumps(self.data, separators=(",", ":"))
        return f"id: {self.id}\nevent: {self.kind}\ndata: {payload}\n\n".encode()


class EventBus:
    def __init__(self) -> None:
        self._next = 1
        self._ring: deque[BusEvent] = deque(maxlen=RING)
        self._subscribers: set[asyncio.Queue[BusEvent | None]] = set()
        # Which session each subscriber reads for, so that a logout ends its streams at once.
        self._owners: dict[asyncio.Queue[BusEvent | None], str] = {}
        self.closed = False

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        event = BusEvent(self._next, kind, data)
        self._next += 1
        self._ring.append(event)
        for queue in list(self._subscribers):
            if queue.qsize() >= QUEUE:
                # A reader that cannot keep up is cut off rather than slowing everyone.
                self.unsubscribe(queue)
                queue.put_nowait(None)
                continue
            queue.put_nowait(event)

    def close(self) -> None:
        """Shutting down: end every stream (clients reconnect with Last-Event-ID)."""
        self.closed = True
        for queue in self._subscribers:
            queue.put_nowait(None)
        self._subscribers.clear()
        self._owners.clear()

    def subscribe(self, last_id: int | None = None, *,
                  owner: str | None = None) -> asyncio.Queue[BusEvent | None]:
        """A queue of the events from now (after ``last_id`` when given) for session ``owner``."""
        queue: asyncio.Queue[BusEvent | None] = asyncio.Queue()
        if self.closed:
            queue.put_nowait(None)
            return queue
        if last_id is not None:
            for event in self._ring:
                if event.id > last_id:
                    queue.put_nowait(event)
        self._subscribers.add(queue)
        if owner is not None:
            self._owners[queue] = owner
        return queue

    def unsubscribe(self, queue: asyncio.Queue[BusEvent | None]) -> None:
        self._subscribers.discard(queue)
        self._owners.pop(queue, None)

    def end_session(self, owner: str) -> None:
        """The session ``owner`` is gone (a logout here): its streams get nothing more."""
        for queue, who in list(self._owners.items()):
            if who == owner:
                self.unsubscribe(queue)
                queue.put_nowait(None)
