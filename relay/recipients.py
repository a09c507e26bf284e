"""Who to encrypt for (issue 13, docs/protocol.md "Recipients"): the relay keeps each pilot's
certified X25519 key and each drone's signed list of the pilots it obeys, and hands both on.

The relay is not whom these protect: a pilot checks every signature against its own roots
(cockpit/client/recipients.py). The relay still checks them as they arrive, against the keys
it holds, so that a client's mistake is a clear 422 at once, not a refusal at every pilot
later; and it keeps only a newer list than the one it has, so an honest relay never serves
a drone's list backwards.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from dragoon.relay.db import Connection, transaction
from dragoon.relay.errors import ApiError, not_found
from dragoon.shared.errors import DragoonError
from dragoon.shared.keys import PublicKey
from dragoon.shared.pilots_list import (
    check_pilot_x25519_certificate,
    check_pilots_list,
)
from dragoon.shared.trust import parse_x25519


def _invalid(detail: str) -> ApiError:
    return ApiError(422, "invalid", detail)


def store_pilot_key(conn: Connection, fingerprint: str, x25519: str,
                    signature: str) -> dict[str, Any]:
    """``PUT /v1/pilot/x25519``: the pilot's X25519 key, once its SSH key certifies it."""
    row = conn.execute("SELECT public_key FROM pilots WHERE fingerprint = ?",
                       (fingerprint,)).fetchone()
    if row is None:
        raise not_found("pilot")
    try:
        public = parse_x25519(x25519, source="x25519_public_key")
        check_pilot_x25519_certificate(PublicKey.from_openssh(row["public_key"]), public,
                                       signature)
    except DragoonError as exc:
        raise _invalid(f"the X25519 key's certificate does not hold ({exc})") from None
    with transaction(conn):
        conn.execute(
            "INSERT INTO pilot_x25519 (fingerprint, x25519_public_key, x25519_signature,"
            " updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (fingerprint) DO UPDATE SET"
            " x25519_public_key = excluded.x25519_public_key,"
            " x25519_signature = excluded.x25519_signature, updated_at = excluded.updated_at",
            (fingerprint, x25519, signature, time.time()))
    return {"fingerprint": fingerprint, "x25519_public_key": x25519}


def store_pilots_list(conn: Connection, drone: str, fingerprint: str, text: str,
                      signature: str) -> dict[str, Any]:
    """``PUT /v1/worker/pilots``: the drone's signed list, if newer than the one kept."""
    row = conn.execute("SELECT public_key FROM drones WHERE name = ? AND fingerprint = ?",
                       (drone, fingerprint)).fetchone()
    if row is None:
        raise not_found("drone")
    try:
        base64.b64decode(signature, validate=True)
        parsed = check_pilots_list(PublicKey.from_openssh(row["public_key"]), text, signature)
    except (DragoonError, binascii.Error, ValueError) as exc:
        raise _invalid(f"the pilots list does not hold ({exc})") from None
    if parsed.drone != drone:
        raise _invalid(f"the pilots list is drone {parsed.drone}'s, not {drone}'s")
    with transaction(conn):
        kept = conn.execute("SELECT fingerprint, version FROM drone_pilots WHERE drone = ?",
                            (drone,)).fetchone()
        if kept is not None and kept["fingerprint"] == fingerprint \
                and kept["version"] >= parsed.version:
            return {"version": kept["version"], "stored": False}
        conn.execute(
            "INSERT INTO drone_pilots (drone, fingerprint, list, signature, version,"
            " received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (drone) DO UPDATE SET"
            " fingerprint = excluded.fingerprint, list = excluded.list,"
            " signature = excluded.signature, version = excluded.version,"
            " received_at = excluded.received_at",
            (drone, fingerprint, text, signature, parsed.version, time.time()))
    return {"version": parsed.version, "stored": True}


def recipients(conn: Connection, name: str) -> dict[str, Any]:
    """``GET /v1/workers/{name}/recipients``: everything a pilot needs to choose, and check,
    whom a task for ``name`` is encrypted for (docs/protocol.md, "Recipients")."""
    drone = conn.execute("SELECT * FROM drones WHERE name = ?", (name,)).fetchone()
    if drone is None:
        raise not_found("drone")
    listed = conn.execute("SELECT list, signature FROM drone_pilots WHERE drone = ?"
                          " AND fingerprint = ?", (name, drone["fingerprint"])).fetchone()
    pilot_keys: list[dict[str, str]] = []
    if listed is not None:
        fingerprints = []
        for line in listed["list"].splitlines()[3:]:
            try:
                fingerprints.append(PublicKey.from_openssh(line).fingerprint)
            except DragoonError:
                continue  # checked on the way in; a pilot checks it again anyway
        for fingerprint in fingerprints:
            row = conn.execute("SELECT * FROM pilot_x25519 WHERE fingerprint = ?",
                               (fingerprint,)).fetchone()
            if row is not None:
                pilot_keys.append({"fingerprint": fingerprint,
                                   "x25519_public_key": row["x25519_public_key"],
                                   "x25519_signature": row["x25519_signature"]})
    return {
        "drone": {"name": name, "public_key": drone["public_key"],
                  "x25519_public_key": drone["x25519_public_key"],
                  "x25519_signature": drone["x25519_signature"]},
        "pilots": (None if listed is None
                   else {"list": listed["list"], "signature": listed["signature"]}),
        "pilot_keys": pilot_keys,
    }
