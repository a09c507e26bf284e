"""``/v1/worker``: the routes a drone calls (init is open; the rest are RE-V1 signed by its key).

Enroll, the long-poll, output, the outcome, messages and uploads. The pilots'
view of drones (``/v1/workers``) is ``routes/fleet.py``.
"""

from __future__ import annotations

from typing import Any

from dragoon.relay import (
    artifacts,
    dispatch,
    enroll,
    fetches,
    fleet,
    logconf,
    messages,
    quota,
    recipients,
)
from dragoon.relay.auth import DroneDep
from dragoon.relay.blobs import check_artifact_path
from dragoon.relay.context import Relay, RelayDep
from dragoon.relay.db import Connection
from dragoon.relay.errors import ApiError
from dragoon.relay.job_news import publish_news
from dragoon.relay.models import (
    MAX_OFFSET,
    FinishBody,
    InitBody,
    MessageBody,
    PilotsListBody,
    PollBody,
)
from dragoon.relay.output import Closed, Gap, Incomplete
from dragoon.relay.tasks import TaskStore, task_finished
from dragoon.shared.e2e import OVERHEAD, E2EError
from dragoon.shared.sealed_message import sealed_size
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

router = APIRouter(prefix="/v1/worker", tags=["drone"])


@router.post("/init")
async def init(body: InitBody, relay: RelayDep) -> dict[str, Any]:
    enroll.check_name(body.name)
    result = await relay.db.run(
        enroll.register, body.model_dump(), relay.signer.public_key.openssh()
    )
    if isinstance(result, ApiError):
        logconf.event("enroll_failed", drone=body.name, error=result.code)
        raise result
    replaced = result.pop("replaced")
    lost, failed_fetches = result.pop("lost"), result.pop("failed_fetches")
    logconf.event("enroll", drone=result["name"])
    if replaced:
        logconf.event("replace", drone=result["name"], lost=len(lost))
        await _announce_replacement(relay, result["name"], lost, failed_fetches)
        await publish_news(relay)
    return result


async def _announce_replacement(
    relay: Relay, name: str, lost: list[str], failed_fetches: list[str]
) -> None:
    """After the commit: cockpits see the lost tasks and the new drone; waiters wake.

    The wake-up on the drone's signal ends a long-poll the old drone still
    holds: its next pass answers it ``drone_replaced`` (dispatch.assign).
    """
    for task_id in lost:
        relay.bus.publish("task", await relay.db.run(relay.tasks.get, task_id))
        relay.signals.notify(("task", task_id))
    for fetch_id in failed_fetches:
        relay.signals.notify(("fetch", fetch_id))
    if (drone_view := await relay.db.run(fleet.get, name)) is not None:
        relay.bus.publish("drone", drone_view)
    relay.signals.notify(("drone", name))


@router.put("/pilots")
async def pilots(body: PilotsListBody, drone: DroneDep, relay: RelayDep) -> dict[str, Any]:
    """The drone's signed list of the pilots it obeys (docs/protocol.md, "Recipients")."""
    return await relay.db.run(recipients.store_pilots_list, drone.name, drone.fingerprint,
                              body.list, body.signature)


@router.post("/poll")
async def poll(body: PollBody, drone: DroneDep, relay: RelayDep) -> dict[str, Any]:
    return await dispatch.poll(relay, drone.name, body, drone.fingerprint)


@router.post("/log", response_model=None)
async def log(
    request: Request, drone: DroneDep, relay: RelayDep,
    task: str = Query(), stream: str = Query(pattern="^(stdout|stderr|order)$"),
    offset: int = Query(ge=0, le=MAX_OFFSET),
) -> dict[str, Any] | JSONResponse:
    data = await request.body()
    row, result = await quota.append_log(relay, drone.name, task, stream, offset, data)
    if isinstance(result, Gap):
        raise ApiError(409, "offset_gap", f"the relay holds {result.expected} bytes",
                       expected=result.expected)
    if isinstance(result, Closed):
        raise task_finished(row, f"its {stream} is closed at {result.size} bytes",
                            size=result.size)
    relay.signals.notify(("task", task))
    if result.truncated_now:
        changed = await relay.db.run(relay.tasks.get, task)
        relay.bus.publish("task", changed)
    return {"next_offset": result.next_offset}


@router.post("/finish")
async def finish(body: FinishBody, drone: DroneDep, relay: RelayDep) -> dict[str, Any]:
    """Close the log (if every reported byte is here), then record the outcome.

    In that order: once the outcome is recorded no chunk can still be appended.
    The drone is answered once the outcome is committed; the events are queued
    (``bus.publish`` only queues their row, behind that commit) before it is.
    """
    result = await relay.db.run(relay.tasks.recorded_finish, drone.name, body)
    if result is None:
        closed = await relay.output.close_log(body.task, stdout_size=body.stdout_size or 0,
                                              stderr_size=body.stderr_size or 0,
                                              order_size=body.order_size or 0)
        if isinstance(closed, Incomplete):
            raise ApiError(409, "output_incomplete", "ship the rest of the output first",
                           stdout_size=closed.stdout_size, stderr_size=closed.stderr_size,
                           order_size=closed.order_size)
        result = await relay.db.run(record_finish, relay.tasks, drone.name, body)
    changed, drone_view = result.pop("changed"), result.pop("drone", None)
    if changed is not None:
        relay.bus.publish("task", changed)
        # The drone's running count changed too: without this event a cockpit
        # shows the slot as taken until the drone's next metrics report.
        if drone_view is not None:
            relay.bus.publish("drone", drone_view)
        relay.signals.notify(("task", body.task))
        relay.signals.notify(("drone", drone.name))  # a slot is free
        if changed["spec"].get("stdin") is True:  # only such a task has stdin to drop
            await relay.stdin.drop(body.task)  # a finished task reads no more stdin
    await publish_news(relay)  # the job's retry, stop or end (relay/jobs.py settle)
    return result


def record_finish(
    conn: Connection, tasks: TaskStore, drone: str, body: FinishBody
) -> dict[str, Any]:
    """``TaskStore.finish``, and when it changed the task, the drone's view right after the
    commit (its running count): one call on the database thread, not two."""
    result = tasks.finish(conn, drone, body)
    if result["changed"] is not None:
        result["drone"] = fleet.get(conn, drone)
    return result


@router.post("/message")
async def message(body: MessageBody, drone: DroneDep, relay: RelayDep) -> dict[str, Any]:
    """Store message ``index`` of a task as its drone sealed it (the relay reads no text)."""
    try:
        size = sealed_size(body.sealed, index=body.index)
    except E2EError as exc:
        raise ApiError(422, "invalid", f"sealed: {exc.detail}") from None
    if size > relay.config.message_max + OVERHEAD:
        raise ApiError(413, "too_large", f"a message is at most {relay.config.message_max} bytes")
    stored, new = await relay.db.run(messages.add, drone.name, body.task, body.index,
                                     body.sealed, size)
    if new:
        relay.bus.publish("message", stored)
        relay.signals.notify(("messages",))
    return {"id": stored["id"]}


@router.post("/blob")
async def blob(
    request: Request, drone: DroneDep, relay: RelayDep,
    sha256: str = Query(pattern="^[0-9a-f]{64}$"), size: int = Query(ge=0),
    task: str | None = Query(None), path: str | None = Query(None),
    fetch: str | None = Query(None), meta: str | None = Query(None, max_length=8192),
) -> dict[str, Any]:
    """Streamed upload, judged before its body is read; the body is then held to its claim.

    The signature over the claimed ``sha256`` was verified before this runs
    (relay/auth.py ``check_streamed``), and ``sha256`` here is that claim.
    Every refusal that needs no byte of the body (size, task, path, a
    finished task, a resend of what is stored) comes before the first read.
    The body is the file sealed (shared/sealed_files.py) and ``meta`` its sealed
    metadata: the relay keeps both and reads neither.
    """
    relay.blobs.check_declared(size=size, cap=relay.config.artifact_max,
                               content_length=request.headers.get("content-length"))
    if fetch is None:
        if task is None or path is None:
            raise ApiError(422, "invalid", "give task and path, or fetch")
        check_artifact_path(path)
        stored = await relay.db.run(artifacts.admit, drone.name, task, path, sha256)
    else:
        stored = await relay.db.run(fetches.admit, drone.name, fetch, sha256)
    if stored is not None:
        return stored  # a resend: the relay holds this very content already
    await quota.guard_blob(relay, drone.name, size, task=task, path=path, fetch=fetch)
    tmp = await relay.blobs.receive(
        request.stream(), sha256=sha256, size=size, cap=relay.config.artifact_max
    )
    try:
        relay.blobs.keep(tmp, sha256)
    except BaseException:
        relay.blobs.discard(tmp)
        raise
    if fetch is not None:
        await relay.db.run(fetches.complete, drone.name, fetch, sha256, size, meta)
        relay.signals.notify(("fetch", fetch))
    else:
        assert task is not None and path is not None
        await relay.db.run(artifacts.record, drone.name, task, path, sha256, size, meta)
    return {"sha256": sha256, "size": size}
