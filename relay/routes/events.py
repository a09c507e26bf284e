"""``GET /v1/events``: server-sent events of drone, task and message changes.

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
from dragoon.relay.events import BusEvent
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

router = APIRouter(tags=["events"])
KEEPALIVE = 15.0


@router.get("/v1/events")
async def events(request: Request, who: PilotDep, relay: RelayDep) -> StreamingResponse:
    last = request.headers.get("last-event-id")
    queue = relay.bus.subscribe(int(last) if last and last.isdigit() else None,
                                owner=who.token_hash)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b": connected\n\n"
            async for chunk in _deliver(relay, who, queue):
                yield chunk
        finally:
            with contextlib.suppress(Exception):
                relay.bus.unsubscribe(queue)

    return StreamingResponse(
        stream(), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _deliver(relay: Relay, who: PilotPrincipal,
                   queue: asyncio.Queue[BusEvent | None]) -> AsyncIterator[bytes]:
    """Batches of events, each sent only after the session was found still good."""
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
            if await relay.db.run(lambda conn: session_problem(conn, who, time.time())):
                return  # the session is gone: nothing more, not even what is queued
            checked = time.monotonic()
        events = [event for event in batch if event is not None]
        if events:
            yield b"".join(event.encode() for event in events)
            written = time.monotonic()
        if len(events) < len(batch):
            return  # too slow, or shutting down: the client reconnects with Last-Event-ID
        if not events and now >= written + KEEPALIVE:
            yield b": keep-alive\n\n"
            written = time.monotonic()
