"""``/v1/auth``: a pilot's challenge, login and logout, over ``relay/login.py``.

Named for what it does: ``relay/auth.py`` is the RE-V1 middleware that checks
every request's signature, not these routes.
"""

from __future__ import annotations

from typing import Any

from dragoon.relay import logconf, login
from dragoon.relay.auth import PilotDep
from dragoon.relay.context import RelayDep
from dragoon.relay.errors import ApiError
from dragoon.relay.models import ChallengeBody, LoginBody
from fastapi import APIRouter

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post("/challenge")
async def challenge(body: ChallengeBody, relay: RelayDep) -> dict[str, Any]:
    return await relay.db.run(login.issue_challenge, relay.config, body.fingerprint)


@router.post("/login")
async def do_login(body: LoginBody, relay: RelayDep) -> dict[str, Any]:
    attempt = login.LoginAttempt(body.fingerprint, body.challenge, body.signature, body.totp)
    result = await relay.db.run(login.login, relay.config, attempt)
    if isinstance(result, ApiError):
        logconf.event("login_failed", fingerprint=body.fingerprint, error=result.code)
        raise result
    logconf.event("login", pilot=result["pilot"], fingerprint=body.fingerprint)
    return result


@router.post("/logout")
async def logout(who: PilotDep, relay: RelayDep) -> dict[str, Any]:
    await relay.db.run(login.logout, who.token_hash, who.name)
    relay.bus.end_session(who.token_hash)  # its event streams end now, not at their next look
    return {"ok": True}
