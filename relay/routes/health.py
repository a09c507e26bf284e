"""``GET /healthz``: liveness for supervisors and load balancers (open, unsigned)."""

from __future__ import annotations

from typing import Any

from dragoon.relay.context import RelayDep
from fastapi import APIRouter

router = APIRouter(tags=["relay"])


@router.get("/healthz")
async def healthz(relay: RelayDep) -> dict[str, Any]:
    """Liveness that also proves the database answers."""
    await relay.db.run(lambda conn: conn.execute("SELECT 1").fetchone())
    return {"ok": True}
