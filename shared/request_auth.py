"""RE-V1 request signing (clients) and verification (the relay).

The verifier is pure: it takes what arrived on the wire plus a key lookup and
answers with the verified signer or a precise error code of PROTOCOL.md. The
nonce memory is the relay's (it lives in its database), so the last check of
the protocol, ``replayed_nonce``, is not made here.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from dragoon.shared import constants as c
from dragoon.shared import sshsig
from dragoon.shared.canonical import canonical_request
from dragoon.shared.errors import SignatureError
from dragoon.shared.keys import PublicKey
from dragoon.shared.signers import Signer

Principal = TypeVar("Principal")

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[0-9a-f]{32}")
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_BEARER = re.compile(r"Bearer ([A-Za-z0-9._~+/=-]{1,512})")


def new_nonce() -> str:
    return secrets.token_hex(16)


def sign_request(
    signer: Signer,
    *,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    token: str | None = None,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The RE-V1 headers for one request; ``path`` and ``query`` exactly as they go on the wire."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or new_nonce()
    fingerprint = signer.fingerprint
    message = canonical_request(
        method=method, path=path, query=query, timestamp=ts, nonce=nonce,
        fingerprint=fingerprint, body=body,
    )
    headers = {
        c.HEADER_TIMESTAMP: ts,
        c.HEADER_NONCE: nonce,
        c.HEADER_FINGERPRINT: fingerprint,
        c.HEADER_SIGNATURE: sshsig.encode_b64(signer.sign(c.NS_REQUEST, message)),
    }
    if token is not None:
        headers[c.HEADER_AUTHORIZATION] = f"Bearer {token}"
    return headers


@dataclass(frozen=True)
class RequestRejected:
    """Why a request was refused: a PROTOCOL.md error code and a human line."""

    code: str
    detail: str


@dataclass(frozen=True)
class KeyMatch(Generic[Principal]):
    """What a key lookup found: the key to verify with and who it belongs to."""

    public_key: PublicKey
    principal: Principal


@dataclass(frozen=True)
class VerifiedRequest(Generic[Principal]):
    principal: Principal
    public_key: PublicKey
    nonce: str
    timestamp: int


KeyLookup = Callable[[str, str | None], "KeyMatch[Principal] | RequestRejected"]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever its case: HTTP header names are case-insensitive.

    Starlette's headers already match any case; a plain dict (tests, other
    frameworks) may carry ``x-re-nonce`` or ``X-Re-Nonce``, so scan it too.
    """
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


def bearer_token(headers: Mapping[str, str]) -> str | RequestRejected | None:
    """The bearer token, None when absent, or a rejection when the header is malformed."""
    value = _header(headers, c.HEADER_AUTHORIZATION)
    if value is None:
        return None
    match = _BEARER.fullmatch(value)
    if not match:
        return RequestRejected(c.ERR_HEADERS, "Authorization must be 'Bearer <token>'")
    return match.group(1)


def verify_request(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    lookup: Callable[[str, str | None], KeyMatch[Principal] | RequestRejected],
    now: float | None = None,
    max_skew: int = c.MAX_CLOCK_SKEW_SECONDS,
    body_sha256: str | None = None,
) -> VerifiedRequest[Principal] | RequestRejected:
    """Check an RE-V1 request in PROTOCOL.md's order, stopping at the first failure.

    ``lookup(fingerprint, bearer_token)`` maps the claimed signer to its key
    (an enrolled drone, or a pilot whose session token is bound to that key),
    or answers ``unknown_key``, ``bad_session`` or ``fingerprint_mismatch``.
    """
    values = {
        name: _header(headers, name)
        for name in (c.HEADER_TIMESTAMP, c.HEADER_NONCE, c.HEADER_FINGERPRINT, c.HEADER_SIGNATURE)
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        return RequestRejected(c.ERR_HEADERS, f"missing header {', '.join(missing)}")
    timestamp = values[c.HEADER_TIMESTAMP] or ""
    nonce = values[c.HEADER_NONCE] or ""
    fingerprint = values[c.HEADER_FINGERPRINT] or ""
    signature_b64 = values[c.HEADER_SIGNATURE] or ""
    if not _TIMESTAMP.fullmatch(timestamp):
        return RequestRejected(c.ERR_HEADERS, f"{c.HEADER_TIMESTAMP} must be decimal Unix seconds")
    if not _NONCE.fullmatch(nonce):
        return RequestRejected(c.ERR_HEADERS, f"{c.HEADER_NONCE} must be 32 lowercase hex digits")
    if not _FINGERPRINT.fullmatch(fingerprint):
        return RequestRejected(c.ERR_HEADERS, f"{c.HEADER_FINGERPRINT} must be SHA256:<43 base64>")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return RequestRejected(c.ERR_HEADERS, f"{c.HEADER_SIGNATURE} is not valid base64")
    token = bearer_token(headers)
    if isinstance(token, RequestRejected):
        return token

    clock = time.time() if now is None else now
    if abs(clock - int(timestamp)) > max_skew:
        return RequestRejected(
            c.ERR_STALE, f"timestamp is {int(clock - int(timestamp))} s off the relay's clock"
        )

    match = lookup(fingerprint, token)
    if isinstance(match, RequestRejected):
        return match

    try:
        message = canonical_request(
            method=method, path=raw_path, query=raw_query, timestamp=timestamp, nonce=nonce,
            fingerprint=fingerprint, body=body, body_sha256=body_sha256,
        )
    except ValueError as exc:
        return RequestRejected(c.ERR_BAD_SIGNATURE, str(exc))
    try:
        sshsig.verify(signature, c.NS_REQUEST, message, match.public_key)
    except SignatureError as exc:
        return RequestRejected(c.ERR_BAD_SIGNATURE, exc.detail)
    return VerifiedRequest(match.principal, match.public_key, nonce, int(timestamp))
