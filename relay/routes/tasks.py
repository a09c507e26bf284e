"""``/v1/tasks``: submit, list, show, cancel, read output, artifacts."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from dragoon.relay import artifacts, held, logconf
from dragoon.relay import orders as relay_orders
from dragoon.relay.auth import PilotDep, PilotPrincipal, check_session
from dragoon.relay.blobs import check_artifact_path
from dragoon.relay.context import Relay, RelayDep
from dragoon.relay.db import Connection
from dragoon.relay.dispatch import START_DEADLINES
from dragoon.relay.errors import ApiError, not_found
from dragoon.relay.job_news import publish_news
from dragoon.relay.models import MAX_OFFSET, CancelBody, SubmitBody
from dragoon.relay.routes.downloads import blob_response
from dragoon.shared.models import TaskState
from dragoon.shared.spec import SpecError, check_task_prefix
from fastapi import APIRouter, Query
from fastapi.responses import Response

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
INLINE_READ: Final = 64 << 10  # bytes a log read may take on the event loop itself


@router.post("", status_code=201)
async def submit(body: SubmitBody, who: PilotDep, relay: RelayDep) -> dict[str, Any]:
    if (body.drone is None) == (body.labels is None):  # the body's own rules before the order's
        raise ApiError(422, "invalid", "give exactly one target: drone or labels")
    order = relay_orders.check(body.order, body.order_signature, kind="task",
                               fingerprint=who.fingerprint)
    result = await relay.db.run(relay.tasks.submit, who.name, body, order)
    logconf.event("submit", task=result.task["id"], pilot=who.name)
    relay.bus.publish("task", result.task)
    for drone in result.wake:
        relay.signals.notify(("drone", drone))
    if result.task.get("start_by") is not None:
        relay.signals.notify(START_DEADLINES)  # the sweeper's next wake may now be sooner
    return result.task


@router.get("")
async def list_tasks(
    _who: PilotDep, relay: RelayDep,
    drone: str | None = Query(None), state: str | None = Query(None),
    limit: int = Query(100, ge=1, le=1000), before: str | None = Query(None),
    id_prefix: str | None = Query(None), job: str | None = Query(None, max_length=40),
) -> dict[str, Any]:
    prefix = None
    if id_prefix is not None:
        try:
            prefix = check_task_prefix(id_prefix)
        except SpecError as exc:
            raise ApiError(422, "invalid", str(exc)) from None
    return await relay.db.run(
        lambda conn: relay.tasks.listing(conn, drone=drone, state=state, limit=limit,
                                         before=before, id_prefix=prefix, job=job)
    )


@router.get("/{task_id}")
async def show(task_id: str, _who: PilotDep, relay: RelayDep) -> dict[str, Any]:
    return await relay.db.run(relay.tasks.get, task_id)


@router.post("/{task_id}/cancel")
async def cancel(
    task_id: str, who: PilotDep, relay: RelayDep, body: CancelBody | None = None
) -> dict[str, Any]:
    grace = body.grace if body is not None else None
    order = None
    if body is not None and (body.order or body.order_signature):
        order = relay_orders.check(body.order, body.order_signature, kind="cancel",
                                   fingerprint=who.fingerprint)
        relay_orders.same(order, "task", task_id, "task")
        relay_orders.same(order, "grace", grace, "grace")
    signature = body.order_signature if order is not None and body is not None else None
    result = await relay.db.run(relay.tasks.cancel, task_id, grace, who.name, order, signature)
    relay.bus.publish("task", result.task)
    relay.signals.notify(("task", task_id))
    if result.wake:
        relay.signals.notify(("drone", result.wake))
    await publish_news(relay)
    return result.task


@router.get("/{task_id}/log")
async def read_log(
    task_id: str, who: PilotDep, relay: RelayDep,
    stream: str = Query("stdout", pattern="^(stdout|stderr|order)$"),
    offset: int = Query(0, ge=0, le=MAX_OFFSET), limit: int = Query(1 << 20, ge=1, le=8 << 20),
    wait: float = Query(0, ge=0),
) -> Response:
    """Bytes from ``offset``; with ``wait`` and nothing new, held until an append or a change."""
    key = ("task", task_id)
    deadline = time.monotonic() + min(wait, relay.config.poll_max_wait)
    woken = False
    while True:
        version = relay.signals.version(key)
        # One database call per pass: the task's state, and after a wake-up the session too
        # (held.wait leaves that check to this call, before anything is answered).
        state = await relay.db.run(follow_pass, task_id, who if woken else None)
        # The sizes after the state: a final state means a closed log (the finish closes it
        # before the outcome commits), so these are its final sizes.
        size = relay.output.size(task_id, stream)
        data = await _read(relay, task_id, stream, offset, min(limit, max(size - offset, 0)))
        final = TaskState(state).is_final
        remaining = deadline - time.monotonic()
        if data or final or remaining <= 0:
            break
        if not await held.wait(relay, who, key, version, remaining, caller_rechecks=True):
            break  # time is up (or the relay is stopping): answer what there is
        woken = True
    end = offset + len(data)
    headers = {
        "X-Dragoon-Offset": str(offset), "X-Dragoon-Next-Offset": str(end),
        "X-Dragoon-Task-State": state,
    }
    if final and end >= size:
        headers["X-Dragoon-Eof"] = "1"
    if relay.output.cut(task_id, stream):
        # Out of band: the stream is sealed records, nothing can be written into it.
        headers["X-Dragoon-Truncated"] = str(relay.output.cap)
    return Response(data, media_type="application/octet-stream", headers=headers)


def follow_pass(conn: Connection, task_id: str, who: PilotPrincipal | None) -> str:
    """The task's state for a log read, with ``who``'s session checked first when given."""
    if who is not None:
        check_session(conn, who)
    row = conn.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise not_found("task")
    return str(row["state"])


async def _read(relay: Relay, task_id: str, stream: str, offset: int, want: int) -> bytes:
    """``want`` bytes of the log from ``offset``: none asked, no read; a small read (what a
    follower's wake-up brings, bytes just written and in the page cache) on the event loop,
    which costs less than a hop to a worker thread and back; a large one on a thread."""
    if want <= 0:
        return b""
    if want <= INLINE_READ:
        return relay.output.read(task_id, stream, offset, want)
    return await asyncio.to_thread(relay.output.read, task_id, stream, offset, want)


@router.get("/{task_id}/artifact", response_model=None)
async def artifact(
    task_id: str, _who: PilotDep, relay: RelayDep, path: str | None = Query(None),
) -> dict[str, Any] | Response:
    await relay.db.run(relay.tasks.get, task_id)
    if path is None:
        return {"artifacts": await relay.db.run(artifacts.listing, task_id)}
    check_artifact_path(path)
    sha256 = await relay.db.run(artifacts.sha256_of, task_id, path)
    if sha256 is None:
        raise not_found("artifact")
    return blob_response(relay.blobs, path.rsplit("/", 1)[-1], sha256)

