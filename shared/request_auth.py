"""RE-V1 request signing (clients) and verification (the relay).

The verifier is pure: it takes what arrived on the wire plus a key lookup and
answers with the verified signer or a precise error code of PROTOCOL.md. The
nonce memory is the relay's (it lives in its database), so the last check of
the protocol, ``replayed_nonce``, is not made here. The relay's replay floor is
(``not_before``): part of check 2, a timestamp below it is ``stale_timestamp``
with the floor in the answer, and ``retry_timestamp`` is the client's side of it.

A body streamed from disk is signed over its hash computed ahead
(``sign_streamed_request``); the relay makes checks 1-3 before it reads such a
body (``precheck_request``) and the signature check over the hash it computed
while storing it (``verify_request(body_sha256=...)``).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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
    return _signed_headers(signer, method=method, path=path, query=query, body=body,
                           body_sha256=None, token=token, timestamp=timestamp, nonce=nonce)


def sign_streamed_request(
    signer: Signer,
    *,
    method: str,
    path: str,
    query: str = "",
    body_sha256: str,
    token: str | None = None,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The RE-V1 headers for a body streamed from disk, given its SHA-256 computed ahead.

    The drone's uploads go this way, so a file never sits in memory; the
    canonical request is the one ``sign_request`` would make over the bytes.
    """
    return _signed_headers(signer, method=method, path=path, query=query, body=b"",
                           body_sha256=body_sha256, token=token, timestamp=timestamp,
                           nonce=nonce)


def _signed_headers(
    signer: Signer, *, method: str, path: str, query: str, body: bytes,
    body_sha256: str | None, token: str | None, timestamp: int | None, nonce: str | None,
) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or new_nonce()
    fingerprint = signer.fingerprint
    message = canonical_request(
        method=method, path=path, query=query, timestamp=ts, nonce=nonce,
        fingerprint=fingerprint, body=body, body_sha256=body_sha256,
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

    def extra(self) -> dict[str, Any]:
        """Fields the JSON error carries besides ``error`` and ``detail``."""
        return {}


@dataclass(frozen=True)
class BelowFloor(RequestRejected):
    """``stale_timestamp`` for a request signed before the relay's replay floor.

    The relay forgets its nonces when it restarts, so it refuses every timestamp
    below a floor it stored durably; the answer names the floor so that an
    honest client re-signs at it (``retry_timestamp``) instead of failing.
    """

    not_before: int = 0

    def extra(self) -> dict[str, Any]:
        return {c.FIELD_NOT_BEFORE: self.not_before}


def is_signed(headers: Mapping[str, str]) -> bool:
    """Whether these request headers carry an RE-V1 signature (a client's retry re-signs them)."""
    return _header(headers, c.HEADER_SIGNATURE) is not None


def retry_timestamp(error: Mapping[str, Any], now: float | None = None) -> int | None:
    """The timestamp to re-sign a request with after the relay's answer ``error``, or None.

    Only a ``stale_timestamp`` that names the relay's floor is worth a retry, and
    only when the floor is within the allowed skew of this client's clock: a
    client never signs further ahead of its own clock than a relay accepts.
    """
    if error.get("error") != c.ERR_STALE:
        return None
    floor = error.get(c.FIELD_NOT_BEFORE)
    if not isinstance(floor, int) or isinstance(floor, bool):
        return None
    clock = int(time.time() if now is None else now)
    if floor - clock > c.MAX_CLOCK_SKEW_SECONDS:
        return None
    return max(floor, clock)


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


@dataclass(frozen=True)
class _Claim(Generic[Principal]):
    """What steps 1-3 established: well-formed headers, a fresh clock, a known key."""

    match: KeyMatch[Principal]
    timestamp: str
    nonce: str
    fingerprint: str
    signature: bytes


def _check_claim(
    headers: Mapping[str, str],
    lookup: Callable[[str, str | None], KeyMatch[Principal] | RequestRejected],
    now: float | None,
    max_skew: int,
    not_before: int | None = None,
) -> _Claim[Principal] | RequestRejected:
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
    if not_before is not None and int(timestamp) < not_before:
        return BelowFloor(
            c.ERR_STALE,
            f"signed before the relay's replay floor {not_before} (it restarted and forgot "
            f"the nonces it had seen); sign again with a timestamp of at least {not_before}",
            not_before=not_before,
        )

    match = lookup(fingerprint, token)
    if isinstance(match, RequestRejected):
        return match
    return _Claim(match, timestamp, nonce, fingerprint, signature)


def precheck_request(
    *,
    headers: Mapping[str, str],
    lookup: Callable[[str, str | None], KeyMatch[Principal] | RequestRejected],
    now: float | None = None,
    max_skew: int = c.MAX_CLOCK_SKEW_SECONDS,
    not_before: int | None = None,
) -> KeyMatch[Principal] | RequestRejected:
    """Checks 1-3 of PROTOCOL.md (headers, clock, key), for a body not read yet.

    The relay makes them before it streams an upload to disk, so a stranger
    cannot make it store anything; the signature (check 4) is made with
    ``verify_request(body_sha256=...)`` once the body's hash is known.
    """
    claim = _check_claim(headers, lookup, now, max_skew, not_before)
    return claim if isinstance(claim, RequestRejected) else claim.match


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
    not_before: int | None = None,
) -> VerifiedRequest[Principal] | RequestRejected:
    """Check an RE-V1 request in PROTOCOL.md's order, stopping at the first failure.

    ``lookup(fingerprint, bearer_token)`` maps the claimed signer to its key
    (an enrolled drone, or a pilot whose session token is bound to that key),
    or answers ``unknown_key``, ``bad_session`` or ``fingerprint_mismatch``.
    ``body_sha256`` stands in for ``body`` when the body was hashed as it
    streamed in (see ``sign_streamed_request``). ``not_before`` is the relay's
    replay floor: a timestamp below it fails check 2 (``BelowFloor``).
    """
    claim = _check_claim(headers, lookup, now, max_skew, not_before)
    if isinstance(claim, RequestRejected):
        return claim
    try:
        message = canonical_request(
            method=method, path=raw_path, query=raw_query, timestamp=claim.timestamp,
            nonce=claim.nonce, fingerprint=claim.fingerprint, body=body,
            body_sha256=body_sha256,
        )
    except ValueError as exc:
        return RequestRejected(c.ERR_BAD_SIGNATURE, str(exc))
    try:
        sshsig.verify(claim.signature, c.NS_REQUEST, message, claim.match.public_key)
    except SignatureError as exc:
        return RequestRejected(c.ERR_BAD_SIGNATURE, exc.detail)
    return VerifiedRequest(claim.match.principal, claim.match.public_key, claim.nonce,
                           int(claim.timestamp))
