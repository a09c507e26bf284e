"""``/v1/worker``: the routes a drone calls (init is open; the rest are RE-V1 signed by its key).

Enroll, the long-poll, output, the outcome, messages and uploads. The pilots'
view of drones (``/v1/workers``) is ``routes/fleet.py``.
"""

from __future__ import annotations

from typing import Any

from dragoon.relay import artifacts, dispatch, enroll, fetches, fleet, logconf, messages
from dragoon.relay.auth import RECEIVED_AT_KEY, DroneDep, check_request, raw_path, scope_headers
from dragoon.relay.blobs import check_artifact_path
from dragoon.relay.context import Relay, RelayDep
from dragoon.relay.errors import ApiError, not_found
from dragoon.relay.models import MAX_OFFSET, FinishBody, InitBody, MessageBody, PollBody
from dragoon.relay.output import Gap
from dragoon.relay.tasks import own_task
from dragoon.shared.request_auth import RequestRejected, claimed_fingerprint
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


@router.post("/poll")
async def poll(body: PollBody, drone: DroneDep, relay: RelayDep) -> dict[str, Any]:
    return await dispatch.poll(relay, drone.name, body, drone.fingerprint)


@router.post("/log", response_model=None)
async def log(
    request: Request, drone: DroneDep, relay: RelayDep,
    task: str = Query(), stream: str = Query(pattern="^(stdout|stderr)$"),
    offset: int = Query(ge=0, le=MAX_OFFSET),
) -> dict[str, Any] | JSONResponse:
    row = await relay.db.run(own_task, drone.name, task)
    data = await request.body()
    result = await relay.output.append(row["id"], stream, offset, data)
    if isinstance(result, Gap):
        raise ApiError(409, "offset_gap", f"the relay holds {result.expected} bytes",
                       expected=result.expected)
    relay.signals.notify(("task", task))
    if result.truncated_now:
        changed = await relay.db.run(relay.tasks.get, task)
        relay.bus.publish("task", changed)
    return {"next_offset": result.next_offset}


@router.post("/finish")
async def finish(body: FinishBody, drone: DroneDep, relay: RelayDep) -> dict[str, Any]:
    result = await relay.db.run(relay.tasks.finish, drone.name, body)
    if isinstance(result, ApiError):
        raise result
    changed = result.pop("changed")
    if changed is not None:
        relay.bus.publish("task", changed)
        relay.signals.notify(("task", body.task))
        relay.signals.notify(("drone", drone.name))  # a slot is free
        # The drone's running count changed too: without this event a cockpit
        # shows the slot as taken until the drone's next metrics report.
        if (drone_view := await relay.db.run(fleet.get, drone.name)) is not None:
            relay.bus.publish("drone", drone_view)
    return result


@router.post("/message")
async def message(body: MessageBody, drone: DroneDep, relay: RelayDep) -> dict[str, Any]:
    if len(body.text.encode("utf-8")) > relay.config.message_max:
        raise ApiError(413, "too_large", f"a message is at most {relay.config.message_max} bytes")
    stored, new = await relay.db.run(messages.add, drone.name, body.task, body.index, body.text)
    if new:
        relay.bus.publish("message", stored)
        relay.signals.notify(("messages",))
    return {"id": stored["id"]}


@router.post("/blob")
async def blob(
    request: Request, relay: RelayDep,
    sha256: str = Query(pattern="^[0-9a-f]{64}$"), size: int = Query(ge=0),
    task: str | None = Query(None), path: str | None = Query(None),
    fetch: str | None = Query(None),
) -> dict[str, Any]:
    """Streamed upload: checked against the declared size and hash, then the signature."""
    name = await _blob_drone(request, relay)
    if fetch is None:
        if task is None or path is None:
            raise ApiError(422, "invalid", "give task and path, or fetch")
        check_artifact_path(path)
        await relay.db.run(own_task, name, task)
    else:
        found = await relay.db.run(fetches.get, fetch)
        if found is None or found["drone"] != name:
            raise not_found("fetch for this drone")
    tmp, digest = await relay.blobs.receive(
        request.stream(), size=size, cap=relay.config.artifact_max
    )
    try:
        if digest != sha256:
            raise ApiError(400, "hash_mismatch", f"the body hashes to {digest}, not {sha256}")
        verified = await relay.db.run(
            lambda conn: check_request(
                conn, method="POST", raw_path=raw_path(request.scope),
                raw_query=request.scope.get("query_string", b"").decode("latin-1"),
                headers=scope_headers(request.scope), body=b"",
                nonce_ttl=relay.config.nonce_ttl, streamed_sha256=digest,
                received_at=request.scope.get(RECEIVED_AT_KEY),
            )
        )
        if isinstance(verified, RequestRejected):
            raise ApiError(401, verified.code, verified.detail)
    except BaseException:
        relay.blobs.discard(tmp)
        raise
    relay.blobs.keep(tmp, digest)
    if fetch is not None:
        error = await relay.db.run(fetches.complete, name, fetch, digest, size)
        if error is not None:
            raise ApiError(409, "conflict", error)
        relay.signals.notify(("fetch", fetch))
    else:
        assert task is not None and path is not None
        error = await relay.db.run(artifacts.record, task, path, digest, size)
        if error is not None:
            raise ApiError(409, "conflict", error)
    return {"sha256": digest, "size": size}


async def _blob_drone(request: Request, relay: Relay) -> str:
    """The drone named by the (pre-checked) headers; the signature is checked after the body."""
    fingerprint = claimed_fingerprint(request.headers) or ""
    row = await relay.db.run(
        lambda conn: conn.execute(
            "SELECT name FROM drones WHERE fingerprint = ?", (fingerprint,)
        ).fetchone()
    )
    if row is None:
        raise ApiError(403, "forbidden", "this route is for drones")
    return str(row["name"])
