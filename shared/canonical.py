"""The canonical byte strings that get signed: RE-V1, RE-LOGIN-V1, RE-TASK-V1, canonical JSON.

These are the byte formats of PROTOCOL.md; fixtures/ pins them and the parity
tests hold this module to them.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from dragoon.shared.constants import LOGIN_VERSION, REQUEST_VERSION, TASK_VERSION

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256_hex(value: object) -> bool:
    """True for the 64 lowercase hex digits PROTOCOL.md writes a SHA-256 as, nothing else."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def _check_sha256_hex(name: str, value: str) -> None:
    # A hash given instead of the bytes is signed as it stands: anything but 64
    # lowercase hex digits (a line break above all) would sign another message.
    if not is_sha256_hex(value):
        raise ValueError(f"{name} must be 64 lowercase hex digits, not {value!r}")


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
    streamed past (the drone's uploads, the relay's blob route), so it never
    sits in memory; it must be 64 lowercase hex digits.

    A field holding a line break would shift the lines and let two requests
    share one canonical form, so it is refused (ValueError) rather than signed.
    """
    _single_lines(method=method, path=path, query=query, timestamp=timestamp, nonce=nonce,
                  fingerprint=fingerprint)
    if body_sha256 is not None:
        _check_sha256_hex("body_sha256", body_sha256)
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

    The spec is hashed here, as its canonical JSON; a spec that has none (NaN,
    a value JSON cannot hold) is a ValueError or TypeError. The other fields
    are checked as in ``canonical_task_from_hash``.
    """
    _check_task_fields(task_id, drone, seq)
    return _task_lines(task_id, drone, seq, spec_sha256(spec))


def canonical_task_from_hash(*, task_id: str, drone: str, seq: int, spec_hash: str) -> bytes:
    """The five RE-TASK-V1 lines over a spec hash computed ahead (stored or received).

    Task id and drone name must be single lines, ``seq`` a non-negative int
    (not a bool) and ``spec_hash`` 64 lowercase hex digits, or a drone could be
    shown one task's lines as another's: anything else is a ValueError.
    """
    _check_task_fields(task_id, drone, seq)
    _check_sha256_hex("spec_sha256", spec_hash)
    return _task_lines(task_id, drone, seq, spec_hash)


def _check_task_fields(task_id: str, drone: str, seq: int) -> None:
    _single_lines(task_id=task_id, drone=drone)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"seq must be a non-negative integer, not {seq!r}")


def _task_lines(task_id: str, drone: str, seq: int, spec_hash: str) -> bytes:
    return f"{TASK_VERSION}\n{task_id}\n{drone}\n{seq}\n{spec_hash}".encode()
