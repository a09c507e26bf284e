"""``/v1/messages``: the pilot's inbox."""

from __future__ import annotations

import time
from typing import Any

from dragoon.relay import held, messages
from dragoon.relay.auth import PilotDep
from dragoon.relay.context import RelayDep
from dragoon.relay.errors import ApiError
from dragoon.relay.jobs import checked_job_id
from dragoon.relay.models import AckBody
from dragoon.shared.spec import SpecError, parse_task_ref
from fastapi import APIRouter, Query

router = APIRouter(prefix="/v1/messages", tags=["inbox"])


def _whole_task_id(text: str) -> str:
    """The ``task`` filter: a whole task id (a prefix is resolved first, by the client)."""
    try:
        ref = parse_task_ref(text)
    except SpecError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    if not ref.exact:
        raise ApiError(422, "invalid", f"task: {ref.text!r} is a prefix; give the whole id")
    return ref.text


@router.get("")
async def inbox(
    who: PilotDep, relay: RelayDep,
    after: int | None = Query(None, ge=0), unread: bool = Query(False),
    limit: int = Query(100, ge=1, le=1000), wait: float = Query(0, ge=0),
    job: str | None = Query(None, max_length=40), task: str | None = Query(None, max_length=40),
) -> dict[str, Any]:
    job = None if job is None else checked_job_id(job)
    task = None if task is None else _whole_task_id(task)
    key = ("messages",)
    deadline = time.monotonic() + min(wait, relay.config.poll_max_wait)
    while True:
        version = relay.signals.version(key)
        found = await relay.db.run(
            lambda conn: messages.listing(conn, after=after, unread=unread, limit=limit,
                                          job=job, task=task)
        )
        remaining = deadline - time.monotonic()
        if found or remaining <= 0 or not await held.wait(relay, who, key, version, remaining):
            return {"messages": found}


@router.post("/ack")
async def ack(body: AckBody, _who: PilotDep, relay: RelayDep) -> dict[str, Any]:
    return {"acked": await relay.db.run(messages.ack, body.ids)}
