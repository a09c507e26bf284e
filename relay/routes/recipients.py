"""Who to encrypt for (docs/protocol.md, "Recipients"): a pilot publishes its certified X25519
key; a pilot asks, for one drone, for everything it needs to choose and check the recipients.

The drone's own route (``PUT /v1/worker/pilots``, its signed list) is ``routes/drone_api.py``.
"""

from __future__ import annotations

from typing import Any

from dragoon.relay import recipients
from dragoon.relay.auth import PilotDep
from dragoon.relay.context import RelayDep
from dragoon.relay.models import PilotKeyBody
from fastapi import APIRouter

router = APIRouter(tags=["recipients"])


@router.put("/v1/pilot/x25519")
async def put_pilot_key(body: PilotKeyBody, who: PilotDep, relay: RelayDep) -> dict[str, Any]:
    return await relay.db.run(recipients.store_pilot_key, who.fingerprint,
                              body.x25519_public_key, body.x25519_signature)


@router.get("/v1/workers/{name}/recipients")
async def get_recipients(name: str, _who: PilotDep, relay: RelayDep) -> dict[str, Any]:
    return await relay.db.run(recipients.recipients, name)
