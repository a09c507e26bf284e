"""Fetches: a pilot asks a drone for one file; the drone uploads it as a blob on its next poll.

A fetch takes one file: once it is ``ready`` only a resend of that file is
acknowledged, and a ``failed`` fetch takes none.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from typing import Any

from dragoon.relay import audit, quota
from dragoon.relay.db import transaction
from dragoon.relay.errors import ApiError, not_found

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def new_id() -> str:
    return "f-" + "".join(secrets.choice(_ALPHABET) for _ in range(10))


def view(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"], "drone": row["drone"], "path": row["path"], "state": row["state"],
        "error": row["error"], "size": row["size"], "sha256": row["sha256"],
        "created_at": row["created_at"],
    }


def create(conn: sqlite3.Connection, drone: str, path: str, pilot: str,
           order_text: str | None = None,
           order_signature: str | None = None) -> dict[str, Any] | None:
    """A pending fetch, kept with the pilot's signed fetch order the drone will check."""
    with transaction(conn):
        if conn.execute("SELECT 1 FROM drones WHERE name = ?", (drone,)).fetchone() is None:
            return None
        fetch_id = new_id()
        conn.execute(
            "INSERT INTO fetches (id, drone, path, pilot, state, created_at, order_text,"
            " order_signature) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
            (fetch_id, drone, path, pilot, time.time(), order_text, order_signature),
        )
        audit.record(conn, pilot, "fetch", drone, f"{fetch_id} {path}")
    return {"id": fetch_id, "state": "pending"}


def get(conn: sqlite3.Connection, fetch_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM fetches WHERE id = ?", (fetch_id,)).fetchone()
    return None if row is None else view(row)


def fail(conn: sqlite3.Connection, drone: str, fetch_id: str, error: str) -> bool:
    cur = conn.execute(
        "UPDATE fetches SET state = 'failed', error = ? WHERE id = ? AND drone = ?"
        " AND state = 'pending'", (error[:2000], fetch_id, drone),
    )
    return cur.rowcount > 0


def _judge(row: sqlite3.Row | None, drone: str, sha256: str) -> dict[str, Any] | None:
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
    conn: sqlite3.Connection, drone: str, fetch_id: str, sha256: str
) -> dict[str, Any] | None:
    """Before the body is read: may this drone upload this file for this fetch?"""
    return _judge(conn.execute("SELECT * FROM fetches WHERE id = ?", (fetch_id,)).fetchone(),
                  drone, sha256)


def complete(
    conn: sqlite3.Connection, drone: str, fetch_id: str, sha256: str, size: int
) -> None:
    """Record the uploaded file, judged again in the transaction (a failure may have raced)."""
    with transaction(conn):
        row = conn.execute("SELECT * FROM fetches WHERE id = ?", (fetch_id,)).fetchone()
        if _judge(row, drone, sha256) is not None:
            return
        conn.execute(
            "UPDATE fetches SET state = 'ready', sha256 = ?, size = ?, error = NULL WHERE id = ?",
            (sha256, size, fetch_id),
        )
        quota.charge(conn, drone, size)  # counted with the record, in one commit
