"""``/v1/workers``: the pilots' view of the fleet: list drones, mint join tokens, drain, fetch.

The routes a drone itself calls (``/v1/worker``) are ``routes/drone_api.py``.
"""

from __future__ import annotations

from typing import Any

from dragoon.relay import enroll, fetches, fleet, waiting
from dragoon.relay import orders as relay_orders
from dragoon.relay.auth import PilotDep
from dragoon.relay.context import RelayDep
from dragoon.relay.errors import ApiError, not_found
from dragoon.relay.models import DrainBody, FetchBody, MintBody
from dragoon.relay.tasks import payload_sha256
from fastapi import APIRouter

router = APIRouter(prefix="/v1/workers", tags=["drones"])


@router.get("")
async def list_drones(
    _who: PilotDep, relay: RelayDep
) -> dict[str, Any]:
    return {"drones": await relay.db.run(fleet.listing)}


@router.post("")
async def mint_token(
    body: MintBody, who: PilotDep, relay: RelayDep
) -> dict[str, Any]:
    token, expires_at = await relay.db.run(
        lambda conn: enroll.mint(
            conn, relay_url=relay.config.url, relay_key=relay.signer.fingerprint,
            drone=body.name, labels=body.labels, ttl=body.ttl, by=who.name,
            replace=body.replace,
        )
    )
    return {"token": token, "expires_at": expires_at}


@router.post("/{name}/drain")
async def drain(
    name: str, body: DrainBody, who: PilotDep, relay: RelayDep
) -> dict[str, Any]:
    drone = await relay.db.run(fleet.set_drain, name, body.drain, who.name)
    relay.bus.publish("drone", drone)
    relay.signals.notify(("drone", name))
    # Its queued tasks wait for another reason now (draining, or not): their views say so.
    for task in await relay.db.run(
        lambda conn: [relay.tasks.get(conn, t) for t in waiting.queued_for(conn, name)]
    ):
        relay.bus.publish("task", task)
    return drone


@router.post("/{name}/fetch")
async def fetch(
    name: str, body: FetchBody, who: PilotDep, relay: RelayDep
) -> dict[str, Any]:
    order = relay_orders.check(body.order, body.order_signature, kind="fetch",
                               fingerprint=who.fingerprint)
    relay_orders.same(order, "target", {"drone": name}, "target")
    relay_orders.same(order, "fetch", {"payload_sha256": payload_sha256(body.payload)},
                      "payload hash")
    result = await relay.db.run(lambda conn: fetches.create(
        conn, name, who.name, payload=body.payload, wraps=body.wraps, order_text=order.text,
        order_signature=body.order_signature))
    if result is None:
        raise not_found("drone")
    if isinstance(result, ApiError):
        raise result
    relay.signals.notify(("drone", name))
    return result
