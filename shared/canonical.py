"""The canonical byte strings that get signed: RE-V1, RE-LOGIN-V1, RE-TASK-V1, canonical JSON.

These are the byte formats of PROTOCOL.md; fixtures/ pins them and the parity
tests hold this module to them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dragoon.shared.constants import LOGIN_VERSION, REQUEST_VERSION, TASK_VERSION


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_query(raw_query: str) -> str:
    """The query's ``name=value`` pairs as sent, sorted by name then value (bytewise).

    Pairs stay percent-encoded exactly as they travelled; empty segments
    (``a=1&&b=2``) carry nothing and are dropped; a bare ``flag`` sorts as the
    name ``flag`` with an empty value and is kept as sent. ``flag`` and ``flag=``
    tie on (name, value); the whole pair breaks the tie (``flag`` first), so the
    order never depends on a sort being stable.
    """
    pairs = [pair for pair in raw_query.split("&") if pair]

    def sort_key(pair: str) -> tuple[bytes, bytes, bytes]:
        name, _sep, value = pair.partition("=")
        return name.encode("utf-8"), value.encode("utf-8"), pair.encode("utf-8")

    return "&".join(sorted(pairs, key=sort_key))


def canonical_request(
    *,
    method: str,
    path: str,
    query: str,
    timestamp: str,
    nonce: str,
    fingerprint: str,
    body: bytes = b"",
    body_sha256: str | None = None,
) -> bytes:
    """The eight RE-V1 lines joined with ``\\n``, no trailing newline.

    ``body_sha256`` stands in for ``body`` when the body was hashed as it
    streamed past (the relay's blob uploads), so it never sits in memory.

    A field holding a line break would shift the lines and let two requests
    share one canonical form, so it is refused (ValueError) rather than signed.
    """
    _single_lines(method=method, path=path, query=query, timestamp=timestamp, nonce=nonce,
                  fingerprint=fingerprint)
    lines = [
        REQUEST_VERSION,
        method.upper(),
        path,
        canonical_query(query),
        timestamp,
        nonce,
        fingerprint,
        sha256_hex(body) if body_sha256 is None else body_sha256,
    ]
    return "\n".join(lines).encode("utf-8")


def _single_lines(**fields: str) -> None:
    for name, value in fields.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"{name} must not contain a line break: {value!r}")


def login_string(challenge: str, fingerprint: str) -> bytes:
    _single_lines(challenge=challenge, fingerprint=fingerprint)
    return f"{LOGIN_VERSION}\n{challenge}\n{fingerprint}".encode()


def canonical_json(value: Any) -> bytes:
    """Keys sorted, ``,``/``:`` with no spaces, UTF-8 with non-ASCII written as itself."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def spec_sha256(spec: Any) -> str:
    return sha256_hex(canonical_json(spec))


def canonical_task(*, task_id: str, drone: str, seq: int, spec: Any) -> bytes:
    """The five RE-TASK-V1 lines the relay signs for each task it hands a drone.

    Task id and drone name must be single lines and ``seq`` a non-negative int
    (not a bool), or a drone could be shown one task's lines as another's.
    """
    _single_lines(task_id=task_id, drone=drone)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"seq must be a non-negative integer, not {seq!r}")
    return f"{TASK_VERSION}\n{task_id}\n{drone}\n{seq}\n{spec_sha256(spec)}".encode()
