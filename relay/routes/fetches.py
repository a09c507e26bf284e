"""``/v1/fetches``: the state of a file fetched from a drone, and its content."""

from __future__ import annotations

import time
from typing import Any

from dragoon.relay import fetches, held
from dragoon.relay.auth import PilotDep
from dragoon.relay.context import RelayDep
from dragoon.relay.errors import ApiError, not_found
from dragoon.relay.routes.downloads import blob_response
from fastapi import APIRouter, Query
from fastapi.responses import Response

router = APIRouter(prefix="/v1/fetches", tags=["drones"])


@router.get("/{fetch_id}")
async def show(
    fetch_id: str, who: PilotDep, relay: RelayDep, wait: float = Query(0, ge=0)
) -> dict[str, Any]:
    key = ("fetch", fetch_id)
    deadline = time.monotonic() + min(wait, relay.config.poll_max_wait)
    while True:
        version = relay.signals.version(key)
        found = await relay.db.run(fetches.get, fetch_id)
        if found is None:
            raise not_found("fetch")
        remaining = deadline - time.monotonic()
        if found["state"] != "pending" or remaining <= 0:
            return found
        if not await held.wait(relay, who, key, version, remaining):
            return await relay.db.run(fetches.get, fetch_id) or found


@router.get("/{fetch_id}/content")
async def content(fetch_id: str, _who: PilotDep, relay: RelayDep) -> Response:
    found = await relay.db.run(fetches.get, fetch_id)
    if found is None:
        raise not_found("fetch")
    if found["state"] != "ready":
        raise ApiError(409, "conflict", f"the fetch is {found['state']}")
    # The stored file is sealed (its name is in the sealed payload): named after the fetch.
    return blob_response(relay.blobs, fetch_id, found["sha256"])
