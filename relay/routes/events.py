"""``GET /v1/events``: server-sent events of drone, task and message changes.

A stream opens with ``: connected``. A client without ``Last-Event-ID`` is told
where it stands (``id: <epoch>-<n>`` with no event: the newest id before its
stream) and gets every event after it. A client with one gets the events after
it from the store, then live ones, none twice; when that id cannot be resumed
from (another history, older than what is kept), the first event is ``reset``
and the stream goes on from the newest event (relay/events.py).

A stream lives as long as its pilot's session, not one check longer: before each
batch of events is written the session is looked up again (revoked, expired, the
key replaced, the pilot removed: the stream ends), and an idle stream looks every
``session_recheck`` seconds. A logout through this relay ends the session's
streams at once. The cockpit reconnects, and is refused like any request would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from dragoon.relay.auth import PilotDep, PilotPrincipal, session_problem
from dragoon.relay.context import Relay, RelayDep
from dragoon.relay.events import BusEvent, Opening
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

router = APIRouter(tags=["events"])
KEEPALIVE = 15.0


@router.get("/v1/events")
async def events(request: Request, who: PilotDep, relay: RelayDep) -> StreamingResponse:
    # Subscribe before reading where the store stands: nothing falls between the two.
    queue = relay.bus.subscribe(owner=who.token_hash)
    try:
        opening = await relay.bus.open(request.headers.get("last-event-id"))
    except BaseException:
        relay.bus.unsubscribe(queue)
        raise

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield _opening(opening)
            last = opening.start
            while last < opening.head:  # what the client missed, page by page
                page = await relay.bus.replay(last, opening.head)
                if not page or await _session_gone(relay, who):
                    return  # pruned meanwhile, or the session ended: the client reconnects
                yield b"".join(event.encode() for event in page)
                last = page[-1].id
            async for chunk in _deliver(relay, who, queue, opening.head):
                yield chunk
        finally:
            with contextlib.suppress(Exception):
                relay.bus.unsubscribe(queue)

    return StreamingResponse(
        stream(), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _opening(opening: Opening) -> bytes:
    """``: connected``, then a ``reset``, or for a new client its position (an id alone)."""
    if opening.reset is not None:
        return b": connected\n\n" + opening.reset.encode()
    if opening.start == opening.head:
        return f": connected\nid: {opening.position}\n\n".encode()
    return b": connected\n\n"


async def _session_gone(relay: Relay, who: PilotPrincipal) -> bool:
    return bool(await relay.db.run(lambda conn: session_problem(conn, who, time.time())))


async def _deliver(relay: Relay, who: PilotPrincipal, queue: asyncio.Queue[BusEvent | None],
                   sent: int) -> AsyncIterator[bytes]:
    """Batches of live events after ``sent``, each sent only after the session was found
    still good."""
    recheck = relay.config.session_recheck
    checked = written = time.monotonic()
    while True:
        wait = min(written + KEEPALIVE, checked + recheck) - time.monotonic()
        batch: list[BusEvent | None] = []
        with contextlib.suppress(TimeoutError):
            batch.append(await asyncio.wait_for(queue.get(), max(wait, 0.0)))
        while not queue.empty():
            batch.append(queue.get_nowait())
        now = time.monotonic()
        if batch or now >= checked + recheck:
            if await _session_gone(relay, who):
                return  # the session is gone: nothing more, not even what is queued
            checked = time.monotonic()
        # Stored between the subscription and the opening, or replayed already: sent.
        events = [event for event in batch if event is not None and event.id > sent]
        if events:
            yield b"".join(event.encode() for event in events)
            written = time.monotonic()
            sent = events[-1].id
        if any(event is None for event in batch):
            return  # too slow, or shutting down: the client reconnects with Last-Event-ID
        if not events and now >= written + KEEPALIVE:
            yield b": keep-alive\n\n"
            written = time.monotonic()
