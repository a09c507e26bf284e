"""``GET /v1/audit``: the audit trail, newest first, for pilots."""

from __future__ import annotations

from typing import Any

from dragoon.relay import audit
from dragoon.relay.auth import PilotDep
from dragoon.relay.context import RelayDep
from fastapi import APIRouter, Query

router = APIRouter(tags=["relay"])


@router.get("/v1/audit")
async def audit_trail(
    _who: PilotDep,
    relay: RelayDep,
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(None),
) -> dict[str, Any]:
    return {"events": await relay.db.run(audit.listing, limit, before)}
