"""``/v1/worker``: the drone's routes (init is open; the rest are RE-V1 signed by the drone key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from relay import enroll
from relay.context import RelayDep
from relay.errors import ApiError
from relay.models import InitBody

router = APIRouter(prefix="/v1/worker", tags=["drone"])


@router.post("/init")
async def init(body: InitBody, relay: RelayDep) -> dict[str, Any]:
    enroll.check_name(body.name)
    result = await relay.db.run(
        enroll.register, body.model_dump(), relay.signer.public_key.openssh()
    )
    if isinstance(result, ApiError):
        raise result
    return result
