"""RE-V1 on every route but the open ones, as a pure ASGI middleware in front of routing.

Verification happens before any route code or body parsing runs, so an
unsigned request learns nothing but 401. The whole check (key lookup,
signature, nonce) runs as one call on the database thread; the nonce is
recorded with a plain ``INSERT`` on its primary key, so of two concurrent
requests with one nonce exactly one passes.

Routes then ask for the role they need with ``Depends(pilot)`` or
``Depends(drone)``; the wrong role is 403 ``forbidden``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

from dragoon.relay.context import Relay
from dragoon.relay.errors import ApiError
from dragoon.shared import constants as c
from dragoon.shared.keys import PublicKey
from dragoon.shared.request_auth import KeyMatch, RequestRejected, VerifiedRequest, verify_request
from fastapi import Depends, Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PRINCIPAL_KEY: Final = "dragoon.principal"
RECEIVED_AT_KEY: Final = "dragoon.received_at"
# Open besides PROTOCOL.md's three: liveness, metrics (guarded by relay/metrics.py) and the schema.
OPEN_PATHS: Final = frozenset({"/healthz", "/metrics", "/openapi.json"})
STREAMED_PATHS: Final = frozenset({"/v1/worker/blob"})  # the route reads and checks its own body


@dataclass(frozen=True)
class Pilot:
    name: str
    fingerprint: str
    token_hash: str


@dataclass(frozen=True)
class Drone:
    name: str
    fingerprint: str


Principal = Pilot | Drone


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def lookup_key(
    conn: sqlite3.Connection, fingerprint: str, bearer: str | None, now: float
) -> KeyMatch[Principal] | RequestRejected:
    """PROTOCOL.md step 3: an enrolled drone, or a pilot whose session is bound to this key."""
    if bearer is None:
        row = conn.execute(
            "SELECT name, public_key FROM drones WHERE fingerprint = ?", (fingerprint,)
        ).fetchone()
        if row is not None:
            key = PublicKey.from_openssh(row["public_key"])
            return KeyMatch(key, Drone(row["name"], fingerprint))
        if conn.execute("SELECT 1 FROM pilots WHERE fingerprint = ?", (fingerprint,)).fetchone():
            return RequestRejected(c.ERR_BAD_SESSION, "a pilot request needs a session token")
        return RequestRejected(c.ERR_UNKNOWN_KEY, "no drone or pilot has this key")
    digest = token_hash(bearer)
    session = conn.execute(
        "SELECT token_hash, pilot, fingerprint, expires_at FROM sessions WHERE token_hash = ?",
        (digest,),
    ).fetchone()
    if session is None or not hmac.compare_digest(session["token_hash"], digest):
        return RequestRejected(c.ERR_BAD_SESSION, "the session token is unknown or revoked")
    if session["expires_at"] <= now:
        return RequestRejected(c.ERR_BAD_SESSION, "the session has expired; log in again")
    if session["fingerprint"] != fingerprint:
        return RequestRejected(
            c.ERR_FINGERPRINT_MISMATCH, "the session belongs to another key"
        )
    pilot = conn.execute(
        "SELECT name, public_key FROM pilots WHERE name = ?", (session["pilot"],)
    ).fetchone()
    if pilot is None:
        return RequestRejected(c.ERR_UNKNOWN_KEY, "the pilot of this session is gone")
    key = PublicKey.from_openssh(pilot["public_key"])
    return KeyMatch(key, Pilot(pilot["name"], fingerprint, digest))


def session_problem(conn: sqlite3.Connection, who: Pilot, now: float) -> RequestRejected | None:
    """Why ``who``'s session no longer holds, or None: for requests that outlive their check.

    An event stream or a held request was let in by a session that may since have been
    revoked (logout), replaced (the pilot's key changed), orphaned (the pilot removed) or
    have expired; each of those ends it, just as it would refuse the next request.
    """
    row = conn.execute(
        "SELECT s.expires_at, s.fingerprint, p.fingerprint AS current FROM sessions s"
        " LEFT JOIN pilots p ON p.name = s.pilot WHERE s.token_hash = ?",
        (who.token_hash,),
    ).fetchone()
    if row is None:
        return RequestRejected(c.ERR_BAD_SESSION, "the session was revoked; log in again")
    if row["expires_at"] <= now:
        return RequestRejected(c.ERR_BAD_SESSION, "the session has expired; log in again")
    if row["current"] is None:
        return RequestRejected(c.ERR_BAD_SESSION, "the pilot of this session is gone")
    if row["current"] != row["fingerprint"] or row["fingerprint"] != who.fingerprint:
        return RequestRejected(c.ERR_BAD_SESSION, "the pilot's key changed; log in again")
    return None


def drone_problem(conn: sqlite3.Connection, who: Drone) -> RequestRejected | None:
    """Why ``who`` no longer speaks for its drone (re-enrolled with another key), or None."""
    row = conn.execute("SELECT fingerprint FROM drones WHERE name = ?", (who.name,)).fetchone()
    if row is None:
        return RequestRejected(c.ERR_UNKNOWN_KEY, "the drone is no longer enrolled")
    if row["fingerprint"] != who.fingerprint:
        return RequestRejected(c.ERR_UNKNOWN_KEY, "the drone was enrolled again with another key")
    return None


def enrolled_drone(conn: sqlite3.Connection, name: str) -> Drone | None:
    """The drone ``name`` as enrolled now, to re-check a held poll against later."""
    row = conn.execute("SELECT fingerprint FROM drones WHERE name = ?", (name,)).fetchone()
    return None if row is None else Drone(name, row["fingerprint"])


async def require_session(relay: Relay, who: Principal) -> None:
    """Raise 401 when ``who``'s session is gone, or a drone's key is no longer its own."""
    if isinstance(who, Pilot):
        problem = await relay.db.run(lambda conn: session_problem(conn, who, time.time()))
    else:
        problem = await relay.db.run(drone_problem, who)
    if problem is not None:
        raise ApiError(401, problem.code, problem.detail)


def check_request(
    conn: sqlite3.Connection,
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    nonce_ttl: float,
    body_sha256: str | None = None,
    received_at: float | None = None,
) -> VerifiedRequest[Principal] | RequestRejected:
    """All five RE-V1 checks; the nonce is recorded only for a request that passed the rest.

    ``received_at`` is when the request arrived, for a streamed body checked after
    it was read: a long upload must not turn its timestamp stale on the way.
    """
    now = time.time() if received_at is None else received_at
    extra: dict[str, Any] = {} if body_sha256 is None else {"body_sha256": body_sha256}
    result: VerifiedRequest[Principal] | RequestRejected = verify_request(
        method=method, raw_path=raw_path, raw_query=raw_query, headers=headers, body=body,
        lookup=lambda fp, bearer: lookup_key(conn, fp, bearer, now), now=now, **extra,
    )
    if isinstance(result, RequestRejected):
        return result
    try:
        conn.execute(
            "INSERT INTO nonces (nonce, expires_at) VALUES (?, ?)",
            (result.nonce, time.time() + nonce_ttl),
        )
    except sqlite3.IntegrityError:
        return RequestRejected(c.ERR_REPLAYED_NONCE, "this nonce was already used")
    return result


def prevalidate(
    conn: sqlite3.Connection, *, method: str, raw_path: str, raw_query: str,
    headers: dict[str, str],
) -> RequestRejected | None:
    """Steps 1-3 before a streamed body is read, so strangers cannot make the relay store data."""
    now = time.time()
    result = verify_request(
        method=method, raw_path=raw_path, raw_query=raw_query, headers=headers, body=b"",
        lookup=lambda fp, bearer: lookup_key(conn, fp, bearer, now), now=now,
    )
    if isinstance(result, RequestRejected) and result.code != c.ERR_BAD_SIGNATURE:
        return result
    return None


def scope_headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def body_limit(relay: Relay, path: str) -> int:
    if path == "/v1/worker/log":
        return relay.config.max_log_chunk
    return relay.config.max_body


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def send_error(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


class SignedRequests:
    """Checks body size and RE-V1 signatures, then hands the request on with its principal."""

    def __init__(self, app: ASGIApp, relay: Relay) -> None:
        self.app = app
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        headers = scope_headers(scope)
        open_route = (method, path) in c.UNSIGNED_ROUTES or path in OPEN_PATHS
        if path in STREAMED_PATHS and not open_route:
            scope[RECEIVED_AT_KEY] = time.time()
            rejected = await self.relay.db.run(
                lambda conn: prevalidate(
                    conn, method=method, raw_path=raw_path(scope),
                    raw_query=scope.get("query_string", b"").decode("latin-1"), headers=headers,
                )
            )
            if rejected is not None:
                await send_error(send, 401, rejected.code, rejected.detail)
                return
            await self.app(scope, receive, send)
            return
        limit = body_limit(self.relay, path)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_error(send, 413, "too_large", f"the body is over {limit} bytes")
            return
        try:
            body = await read_body(receive, limit)
        except BodyTooLarge:
            await send_error(send, 413, "too_large", f"the body is over {limit} bytes")
            return
        if not open_route:
            result = await self.relay.db.run(
                lambda conn: check_request(
                    conn, method=method, raw_path=raw_path(scope),
                    raw_query=scope.get("query_string", b"").decode("latin-1"),
                    headers=headers, body=body, nonce_ttl=self.relay.config.nonce_ttl,
                )
            )
            if isinstance(result, RequestRejected):
                await send_error(send, 401, result.code, result.detail)
                return
            scope[PRINCIPAL_KEY] = result.principal
        await self.app(scope, _replay(body, receive), send)


def raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    if raw:
        return bytes(raw).split(b"?", 1)[0].decode("latin-1")
    return str(scope["path"])


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def principal(request: Request) -> Principal | None:
    found: Principal | None = request.scope.get(PRINCIPAL_KEY)
    return found


async def pilot(request: Request) -> Pilot:
    """Dependency: the logged-in pilot, or 403 for a drone on a pilot route."""
    who = principal(request)
    if not isinstance(who, Pilot):
        raise ApiError(403, "forbidden", "this route is for pilots")
    return who


async def drone(request: Request) -> Drone:
    """Dependency: the enrolled drone, or 403 for a pilot on a drone route."""
    who = principal(request)
    if not isinstance(who, Drone):
        raise ApiError(403, "forbidden", "this route is for drones")
    return who


PilotDep = Annotated[Pilot, Depends(pilot)]
DroneDep = Annotated[Drone, Depends(drone)]
