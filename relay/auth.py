"""RE-V1 on every route but the open ones, as a pure ASGI middleware in front of routing.

Verification happens before any route code or body parsing runs, so an
unsigned request learns nothing but 401. A streamed upload (``STREAMED_PATHS``)
is verified in full before a byte of its body is read: its signature covers the
body hash that its query claims (``check_streamed``), and the route holds the
body to that claim as it streams in. Checks 1-4 (key lookup, signature) run as
one call on the database thread, which sees every commit, so a logout or a
revocation holds for the very next request. Check 5, the nonce, is
``relay.replay``'s (relay/replay.py): held in memory and claimed on the event
loop, so of two concurrent requests with one nonce exactly one passes, and
covered across a restart by the replay floor that check 2 enforces.

Routes then ask for the role they need with ``Depends(pilot)`` or
``Depends(drone)``; the wrong role is 403 ``forbidden``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any, Final
from urllib.parse import parse_qsl

from dragoon.relay.context import Relay
from dragoon.relay.db import Connection
from dragoon.relay.errors import ApiError
from dragoon.shared import constants as c
from dragoon.shared.canonical import is_sha256_hex
from dragoon.shared.keys import PublicKey
from dragoon.shared.request_auth import (
    KeyMatch,
    RequestRejected,
    VerifiedRequest,
    precheck_request,
    verify_request,
)
from fastapi import Depends, Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PRINCIPAL_KEY: Final = "dragoon.principal"
# Open besides PROTOCOL.md's three: liveness, metrics (guarded in relay/metrics/scrape.py),
# and the schema.
OPEN_PATHS: Final = frozenset({"/healthz", "/metrics", "/openapi.json"})
STREAMED_PATHS: Final = frozenset({"/v1/worker/blob"})  # the route reads and checks its own body
# A pilot's stdin chunk is streamed too: its route may hold it until the window has room
# before reading a byte of it (relay/routes/stdin.py).
STREAMED_PATTERN: Final = re.compile(r"/v1/tasks/[^/]+/stdin")
CLAIM_PARAM: Final = "sha256"  # the query parameter a streamed upload claims its body's hash in


@dataclass(frozen=True)
class PilotPrincipal:
    """A pilot whose request verified, with the session it came with."""

    name: str
    fingerprint: str
    token_hash: str


@dataclass(frozen=True)
class DronePrincipal:
    """An enrolled drone whose request verified."""

    name: str
    fingerprint: str


Principal = PilotPrincipal | DronePrincipal


@dataclass(frozen=True)
class RetiredKey(RequestRejected):
    """``drone_replaced``: the key is retired, a newer enrollment took its drone's name.

    Answered at the key lookup, like ``unknown_key``, with the drone's name and
    the time, so the stale drone can say once why it stops instead of retrying
    (docs/security.md, "Re-enrollment").
    """

    drone: str = ""
    replaced_at: float = 0.0

    def extra(self) -> dict[str, Any]:
        return {"drone": self.drone, "replaced_at": self.replaced_at}


def utc_stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def retired(conn: Connection, fingerprint: str) -> RetiredKey | None:
    """The rejection for a replaced drone's key, or None when the key was never retired."""
    row = conn.execute(
        "SELECT drone, retired_at FROM retired_keys WHERE fingerprint = ?", (fingerprint,)
    ).fetchone()
    if row is None:
        return None
    return RetiredKey(
        c.ERR_DRONE_REPLACED,
        f"drone {row['drone']} was replaced by a newer enrollment at "
        f"{utc_stamp(row['retired_at'])}; this key is retired",
        drone=row["drone"], replaced_at=float(row["retired_at"]),
    )


def require_current(conn: Connection, name: str, fingerprint: str) -> None:
    """401 ``drone_replaced`` unless ``fingerprint`` still holds the name ``name``.

    A request verified just before a replacement committed (a long-poll held
    for seconds) must not act for the successor: it would hand the new
    drone's tasks to the old one.
    """
    row = conn.execute("SELECT fingerprint FROM drones WHERE name = ?", (name,)).fetchone()
    if row is not None and row["fingerprint"] == fingerprint:
        return
    gone = retired(conn, fingerprint)
    if gone is None:
        raise ApiError(401, c.ERR_UNKNOWN_KEY, "no drone or pilot has this key")
    raise ApiError(401, gone.code, gone.detail, **gone.extra())


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=4096)
def public_key(openssh: str) -> PublicKey:
    """The stored key, parsed once: a ``PublicKey`` is immutable, and the text is its identity."""
    return PublicKey.from_openssh(openssh)


def lookup_key(
    conn: Connection, fingerprint: str, bearer: str | None, now: float
) -> KeyMatch[Principal] | RequestRejected:
    """PROTOCOL.md step 3: an enrolled drone, or a pilot whose session is bound to this key."""
    if bearer is None:
        row = conn.execute(
            "SELECT name, public_key FROM drones WHERE fingerprint = ?", (fingerprint,)
        ).fetchone()
        if row is not None:
            key = public_key(row["public_key"])
            return KeyMatch(key, DronePrincipal(row["name"], fingerprint))
        if (gone := retired(conn, fingerprint)) is not None:
            return gone
        if conn.execute("SELECT 1 FROM pilots WHERE fingerprint = ?", (fingerprint,)).fetchone():
            return RequestRejected(c.ERR_BAD_SESSION, "a pilot request needs a session token")
        return RequestRejected(c.ERR_UNKNOWN_KEY, "no drone or pilot has this key")
    digest = token_hash(bearer)
    # One statement for the session and its pilot.
    session = conn.execute(
        "SELECT s.token_hash, s.fingerprint, s.expires_at, p.name, p.public_key"
        " FROM sessions s LEFT JOIN pilots p ON p.name = s.pilot WHERE s.token_hash = ?",
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
    if session["name"] is None:
        return RequestRejected(c.ERR_UNKNOWN_KEY, "the pilot of this session is gone")
    key = public_key(session["public_key"])
    return KeyMatch(key, PilotPrincipal(session["name"], fingerprint, digest))


def session_problem(
    conn: Connection, who: PilotPrincipal, now: float
) -> RequestRejected | None:
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


async def require_session(relay: Relay, who: PilotPrincipal) -> None:
    """Raise 401 when ``who``'s session is gone (revoked, expired, key replaced or removed).

    A drone's key is re-checked by ``dispatch.assign`` on every pass instead
    (``require_current``), in the transaction that would hand work out.
    """
    await relay.db.run(check_session, who)


def check_session(conn: Connection, who: PilotPrincipal) -> None:
    """``require_session`` on the database thread, for a route that checks the session in
    the same call as its own reads (relay/routes/tasks.py ``read_log``)."""
    problem = session_problem(conn, who, time.time())
    if problem is not None:
        raise ApiError(401, problem.code, problem.detail)


def check_request(
    conn: Connection,
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    not_before: int,
    streamed_sha256: str | None = None,
) -> VerifiedRequest[Principal] | RequestRejected:
    """RE-V1 checks 1-4, with the replay floor in check 2; ``admit`` then makes check 5.

    ``streamed_sha256`` stands in for ``body``: the hash a streamed upload claims.
    """
    now = time.time()
    return verify_request(
        method=method, raw_path=raw_path, raw_query=raw_query, headers=headers, body=body,
        lookup=lambda fp, bearer: lookup_key(conn, fp, bearer, now), now=now,
        body_sha256=streamed_sha256, not_before=not_before,
    )


async def admit(relay: Relay, verified: VerifiedRequest[Principal]) -> RequestRejected | None:
    """Check 5: the nonce, recorded in ``relay.replay`` so that of two copies one passes."""
    try:
        if await relay.replay.admit(verified.nonce, verified.timestamp, time.time()):
            return None
    except Exception:  # a shared nonce table that did not answer (relay/pg_nonces.py)
        return RequestRejected(UNAVAILABLE, "the relay cannot check this request's nonce "
                               "now; retry")
    return RequestRejected(c.ERR_REPLAYED_NONCE, "this nonce was already used")


UNAVAILABLE: Final = "unavailable"


def refusal_status(rejected: RequestRejected) -> int:
    """401 for a request that is not good; 503 for one this relay could not check now."""
    return 503 if rejected.code == UNAVAILABLE else 401


def claimed_sha256(raw_query: str) -> str | None:
    """The body hash a streamed upload claims: exactly one ``sha256=`` of 64 lowercase hex.

    Parsed as Starlette parses the query for the route, so the route's ``sha256``
    is this very value; two claims would let the route check another hash than
    the one the signature covers, so they are no claim at all.
    """
    values = [v for k, v in parse_qsl(raw_query, keep_blank_values=True) if k == CLAIM_PARAM]
    if len(values) != 1 or not is_sha256_hex(values[0]):
        return None
    return values[0]


def check_streamed(
    conn: Connection,
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    not_before: int,
) -> VerifiedRequest[Principal] | RequestRejected:
    """RE-V1 checks 1-4 of a streamed upload, before its body is read.

    The signature is verified over the hash the query claims (the RE-V1 streamed
    form, ``sign_streamed_request``); the route then refuses a body that does not
    hash to it. Without a claim there is nothing to verify the body by: checks
    1-3 still answer first, then ``bad_signature`` — never a check over the empty
    body, which would let unsigned bytes follow.
    """
    claim = claimed_sha256(raw_query)
    if claim is None:
        now = time.time()
        pre = precheck_request(
            headers=headers, lookup=lambda fp, bearer: lookup_key(conn, fp, bearer, now), now=now,
            not_before=not_before,
        )
        if isinstance(pre, RequestRejected):
            return pre
        return RequestRejected(
            c.ERR_BAD_SIGNATURE,
            f"a streamed upload is signed over its body's SHA-256, claimed once in the query "
            f"as {CLAIM_PARAM}=<64 lowercase hex>",
        )
    return check_request(conn, method=method, raw_path=raw_path, raw_query=raw_query,
                         headers=headers, body=b"", not_before=not_before,
                         streamed_sha256=claim)


def is_streamed(path: str) -> bool:
    """A route that reads and checks its own body against the claimed hash."""
    return path in STREAMED_PATHS or STREAMED_PATTERN.fullmatch(path) is not None


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


async def send_error(
    send: Send, status: int, code: str, detail: str, *, close: bool = False, **extra: Any
) -> None:
    """The error answer; ``close`` hangs up after it, leaving an unread body unread."""
    body = json.dumps({"error": code, "detail": detail, **extra}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
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
        if is_streamed(path) and not open_route:
            verified = await self.relay.db.run(
                lambda conn: check_streamed(
                    conn, method=method, raw_path=raw_path(scope),
                    raw_query=scope.get("query_string", b"").decode("latin-1"),
                    headers=headers, not_before=self.relay.replay.floor,
                )
            )
            if not isinstance(verified, RequestRejected):
                verified = await admit(self.relay, verified) or verified
            if isinstance(verified, RequestRejected):
                # Hang up: a stranger's gigabytes are neither stored nor read to the end.
                await send_error(send, refusal_status(verified), verified.code,
                                 verified.detail, close=True, **verified.extra())
                return
            scope[PRINCIPAL_KEY] = verified.principal
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
                    headers=headers, body=body, not_before=self.relay.replay.floor,
                )
            )
            if not isinstance(result, RequestRejected):
                result = await admit(self.relay, result) or result
            if isinstance(result, RequestRejected):
                await send_error(send, refusal_status(result), result.code, result.detail,
                                 **result.extra())
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


async def pilot(request: Request) -> PilotPrincipal:
    """Dependency: the logged-in pilot, or 403 for a drone on a pilot route."""
    who = principal(request)
    if not isinstance(who, PilotPrincipal):
        raise ApiError(403, "forbidden", "this route is for pilots")
    return who


async def drone(request: Request) -> DronePrincipal:
    """Dependency: the enrolled drone, or 403 for a pilot on a drone route."""
    who = principal(request)
    if not isinstance(who, DronePrincipal):
        raise ApiError(403, "forbidden", "this route is for drones")
    return who


PilotDep = Annotated[PilotPrincipal, Depends(pilot)]
DroneDep = Annotated[DronePrincipal, Depends(drone)]
