"""``/v1/messages``: the pilot's inbox."""

from __future__ import annotations

import time
from typing import Any

from dragoon.relay import held, messages
from dragoon.relay.auth import PilotDep
from dragoon.relay.context import RelayDep
from dragoon.relay.models import AckBody
from fastapi import APIRouter, Query

router = APIRouter(prefix="/v1/messages", tags=["inbox"])


@router.get("")
async def inbox(
    who: PilotDep, relay: RelayDep,
    after: int | None = Query(None, ge=0), unread: bool = Query(False),
    limit: int = Query(100, ge=1, le=1000), wait: float = Query(0, ge=0),
) -> dict[str, Any]:
    key = ("messages",)
    deadline = time.monotonic() + min(wait, relay.config.poll_max_wait)
    while True:
        version = relay.signals.version(key)
        found = await relay.db.run(
            lambda conn: messages.listing(conn, after=after, unread=unread, limit=limit)
        )
        remaining = deadline - time.monotonic()
        if found or remaining <= 0 or not await held.wait(relay, who, key, version, remaining):
            return {"messages": found}


@router.post("/ack")
async def ack(body: AckBody, _who: PilotDep, relay: RelayDep) -> dict[str, Any]:
    return {"acked": await relay.db.run(messages.ack, body.ids)}
