"""``GET /v1/events``: server-sent events of drone, task and message changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from dragoon.relay.auth import PilotDep
from dragoon.relay.context import RelayDep
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

router = APIRouter(tags=["events"])
KEEPALIVE = 15.0


@router.get("/v1/events")
async def events(request: Request, _who: PilotDep, relay: RelayDep) -> StreamingResponse:
    last = request.headers.get("last-event-id")
    queue = relay.bus.subscribe(int(last) if last and last.isdigit() else None)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b": connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if event is None:
                    return  # too slow: the client reconnects with Last-Event-ID
                yield event.encode()
        finally:
            with contextlib.suppress(Exception):
                relay.bus.unsubscribe(queue)

    return StreamingResponse(
        stream(), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
