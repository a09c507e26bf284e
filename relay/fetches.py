"""Fetches: a pilot asks a drone for one file; the drone uploads it as a blob on its next poll.

A fetch is sealed end to end (docs/protocol.md, "Sealed fetches"): the relay keeps the
sealed payload holding the path, the fetch key's wraps by recipient, and, once the drone
sent it, the file's sealed metadata and the stored (sealed) blob's hash and size. It
never sees the path or the file.

A fetch takes one file: once it is ``ready`` only a resend of that file is
acknowledged, and a ``failed`` fetch takes none.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from dragoon.relay import audit, quota
from dragoon.relay.db import Connection, Row, transaction
from dragoon.relay.errors import ApiError, not_found

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def new_id() -> str:
    return "f-" + "".join(secrets.choice(_ALPHABET) for _ in range(10))


def view(row: Row) -> dict[str, Any]:
    """A fetch as a pilot sees it: with the signed order, the payload and the wraps, which
    the pilot opens with its own wrap, and the sealed metadata of the file once ready."""
    return {
        "id": row["id"], "drone": row["drone"], "state": row["state"],
        "error": row["error"], "size": row["size"], "sha256": row["sha256"],
        "created_at": row["created_at"], "order": row["order_text"],
        "order_signature": row["order_signature"], "payload": row["payload"],
        "wraps": json.loads(row["wraps"] or "{}"), "meta": row["meta"],
    }


def create(conn: Connection, drone: str, pilot: str, *, payload: str,
           wraps: dict[str, str], order_text: str | None = None,
           order_signature: str | None = None) -> dict[str, Any] | None:
    """A pending fetch, kept with the pilot's signed fetch order the drone will check."""
    with transaction(conn):
        if conn.execute("SELECT 1 FROM drones WHERE name = ?", (drone,)).fetchone() is None:
            return None
        fetch_id = new_id()
        conn.execute(
            "INSERT INTO fetches (id, drone, pilot, state, created_at, order_text,"
            " order_signature, payload, wraps) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
            (fetch_id, drone, pilot, time.time(), order_text, order_signature, payload,
             json.dumps(wraps)),
        )
        audit.record(conn, pilot, "fetch", drone, fetch_id)
    return {"id": fetch_id, "state": "pending"}


def get(conn: Connection, fetch_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM fetches WHERE id = ?", (fetch_id,)).fetchone()
    return None if row is None else view(row)


def fail(conn: Connection, drone: str, fetch_id: str, error: str) -> bool:
    cur = conn.execute(
        "UPDATE fetches SET state = 'failed', error = ? WHERE id = ? AND drone = ?"
        " AND state = 'pending'", (error[:2000], fetch_id, drone),
    )
    return cur.rowcount > 0


def _judge(row: Row | None, drone: str, sha256: str) -> dict[str, Any] | None:
    """The stored file for a resend, None when the fetch awaits this upload, or raise.

    A fetch that is not this drone's answers like one that does not exist, so a
    drone learns no other fetch ids.
    """
    if row is None or row["drone"] != drone:
        raise not_found("fetch for this drone")
    if row["state"] == "ready":
        if row["sha256"] != sha256:
            raise ApiError(409, "conflict", "this fetch already has other content")
        return {"sha256": row["sha256"], "size": row["size"]}
    if row["state"] != "pending":
        raise ApiError(409, "fetch_closed", f"this fetch is {row['state']}: it takes no file",
                       state=row["state"])
    return None


def admit(
    conn: Connection, drone: str, fetch_id: str, sha256: str
) -> dict[str, Any] | None:
    """Before the body is read: may this drone upload this file for this fetch?"""
    return _judge(conn.execute("SELECT * FROM fetches WHERE id = ?", (fetch_id,)).fetchone(),
                  drone, sha256)


def complete(
    conn: Connection, drone: str, fetch_id: str, sha256: str, size: int,
    meta: str | None = None,
) -> None:
    """Record the uploaded file, judged again in the transaction (a failure may have raced)."""
    with transaction(conn):
        row = conn.execute("SELECT * FROM fetches WHERE id = ?", (fetch_id,)).fetchone()
        if _judge(row, drone, sha256) is not None:
            return
        conn.execute(
            "UPDATE fetches SET state = 'ready', sha256 = ?, size = ?, meta = ?, error = NULL"
            " WHERE id = ?", (sha256, size, meta, fetch_id),
        )
        quota.charge(conn, drone, size)  # counted with the record, in one commit
