"""A task's stdin: the pilot posts it (``/v1/tasks/{id}/stdin``), the drone reads it
(``/v1/worker/tasks/{id}/stdin``). The window and the offsets are relay/stdin.py's.

The pilot's chunk is a streamed upload (relay/auth.py ``is_streamed``): its
signature was verified over the hash its query claims before this runs, so the
route can hold the request while the window is full without having read a byte
of it, and then reads the body, held to that hash. Every answer comes after the
body is read (it is at most one chunk), so the pilot always gets it, never a
reset of a connection with unread bytes.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from typing import Any

from dragoon.relay import held, stdin
from dragoon.relay.auth import DroneDep, PilotDep, require_current
from dragoon.relay.context import Relay, RelayDep
from dragoon.relay.errors import ApiError
from dragoon.relay.models import MAX_OFFSET
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

router = APIRouter(tags=["stdin"])

SLICE = 1.0  # a held request looks at the task's state this often (it may finish meanwhile)


def _key(task_id: str) -> tuple[str, str]:
    return ("stdin", task_id)


async def _read_chunk(request: Request, sha256: str, cap: int) -> bytes:
    digest = hashlib.sha256()
    pieces: list[bytes] = []
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > cap:
            raise ApiError(413, "too_large", f"a stdin chunk is at most {cap} bytes")
        digest.update(piece)
        pieces.append(piece)
    if digest.hexdigest() != sha256:
        raise ApiError(400, "hash_mismatch",
                       f"the body hashes to {digest.hexdigest()}, not {sha256}")
    return b"".join(pieces)


@router.post("/v1/tasks/{task_id}/stdin")
async def feed(
    request: Request, task_id: str, who: PilotDep, relay: RelayDep,
    offset: int = Query(ge=0, le=MAX_OFFSET), sha256: str = Query(pattern="^[0-9a-f]{64}$"),
    eof: bool = Query(False), wait: float = Query(10, ge=0),
) -> dict[str, Any]:
    """Append a chunk at ``offset`` (``eof``: and close stdin after it); held while the
    window is full, up to ``wait`` seconds, then 409 ``window_full``."""
    store = relay.stdin
    deadline = time.monotonic() + min(wait, relay.config.poll_max_wait)
    refusal: ApiError | None = None
    full = False
    while True:
        version = relay.signals.version(_key(task_id))
        try:
            await relay.db.run(stdin.pilot_task, who.name, task_id)
        except ApiError as exc:
            refusal = exc
            break
        state = await store.state(task_id)
        if offset != state.end or state.eof or state.has_room(store.window):
            break  # a resend, a gap or a closed stdin is judged by the store, now
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            full = True
            break
        await held.wait(relay, who, _key(task_id), version, min(remaining, SLICE))
    data = await _read_chunk(request, sha256, relay.config.max_log_chunk)
    if refusal is not None:
        raise refusal
    result = None if full else await store.append(task_id, offset, data, eof)
    if result is None or isinstance(result, stdin.WindowFull):
        raise ApiError(409, "window_full", "the drone has not taken the stdin sent so far; "
                       "send again", expected=offset if result is None else result.expected)
    if isinstance(result, stdin.StdinGap):
        raise ApiError(409, "offset_gap", f"the relay holds {result.expected} bytes of stdin",
                       expected=result.expected)
    if isinstance(result, stdin.StdinClosed):
        raise ApiError(409, "stdin_closed", f"stdin was closed at {result.size} bytes",
                       size=result.size)
    relay.signals.notify(_key(task_id))
    return {"next_offset": result.next_offset, "eof": result.eof}


async def _drone_task(relay: Relay, drone: str, fingerprint: str, task_id: str) -> None:
    def check(conn: sqlite3.Connection) -> None:
        require_current(conn, drone, fingerprint)
        stdin.drone_task(conn, drone, task_id)

    await relay.db.run(check)


@router.get("/v1/worker/tasks/{task_id}/stdin")
async def take(
    task_id: str, drone: DroneDep, relay: RelayDep,
    offset: int = Query(ge=0, le=MAX_OFFSET), limit: int = Query(256 * 1024, ge=1, le=1 << 20),
    wait: float = Query(0, ge=0),
) -> Response:
    """Bytes from ``offset``, which acknowledges every byte below it; with ``wait`` and
    nothing there yet, held until the pilot sends more (or closes stdin)."""
    deadline = time.monotonic() + min(wait, relay.config.poll_max_wait)
    while True:
        version = relay.signals.version(_key(task_id))
        await _drone_task(relay, drone.name, drone.fingerprint, task_id)
        result = await relay.stdin.read(task_id, offset, limit)
        if isinstance(result, stdin.StdinGap):
            raise ApiError(409, "offset_gap", f"the relay holds stdin from {result.expected}",
                           expected=result.expected)
        if result.acked_moved:
            relay.signals.notify(_key(task_id))  # room in the window: a held upload goes on
            version += 1  # our own wake-up; a pilot's append meanwhile still counts
        remaining = deadline - time.monotonic()
        if result.data or result.eof or remaining <= 0:
            break
        moved = await held.wait(relay, None, _key(task_id), version, min(remaining, SLICE))
        if not moved and relay.signals.closed:
            break
    end = offset + len(result.data)
    headers = {"X-Dragoon-Offset": str(offset), "X-Dragoon-Next-Offset": str(end)}
    if result.eof:
        headers["X-Dragoon-Eof"] = "1"
    return Response(result.data, media_type="application/octet-stream", headers=headers)

