"""The fleet: every enrolled drone's record (state, labels, slots, load, metrics) and drain.

One view of a drone serves everyone who shows one: the pilots' ``/v1/workers``
routes, the dispatcher and the drone's own routes when they publish a
``drone`` event. Enrollment (how a drone joins) is ``relay/enroll.py``'s.
"""

from __future__ import annotations

import json
from typing import Any

from dragoon.relay import audit
from dragoon.relay.db import Connection, Row, transaction
from dragoon.relay.errors import ApiError, not_found


def view(row: Row, running: int, *, trust: bool = False) -> dict[str, Any]:
    """A drone as the API shows it; ``trust`` adds what the drone sent at init for the pilots
    to check (the listing has it; the ``drone`` events, sent on every change, do not)."""
    shown = {
        "name": row["name"], "state": row["state"], "draining": bool(row["draining"]),
        "labels": json.loads(row["labels"]), "slots": row["slots"], "running": running,
        "fingerprint": row["fingerprint"], "last_seen": row["last_seen"],
        "enrolled_at": row["enrolled_at"], "hostname": row["hostname"],
        "version": row["version"],
        "metrics": json.loads(row["metrics"]) if row["metrics"] else None,
    }
    if trust:
        # Trust roots, for the pilots to check themselves (docs/security.md, "Trust roots on
        # the ends"): the relay only repeats what the drone sent at init.
        shown.update({
            "public_key": row["public_key"], "x25519_public_key": row["x25519_public_key"],
            "x25519_signature": row["x25519_signature"], "binding": row["binding"],
            "enrollment": row["enrolled_with"]})
    return shown


def _running(conn: Connection, name: str) -> int:
    return int(conn.execute(
        "SELECT COUNT(*) FROM tasks WHERE drone = ? AND state IN ('dispatched', 'running')",
        (name,),
    ).fetchone()[0])


def get(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM drones WHERE name = ?", (name,)).fetchone()
    return None if row is None else view(row, _running(conn, name))


def listing(conn: Connection) -> list[dict[str, Any]]:
    counts = dict(conn.execute(
        "SELECT drone, COUNT(*) FROM tasks WHERE state IN ('dispatched', 'running')"
        " GROUP BY drone"
    ).fetchall())
    rows = conn.execute("SELECT * FROM drones ORDER BY name").fetchall()
    return [view(row, counts.get(row["name"], 0), trust=True) for row in rows]


def set_drain(conn: Connection, name: str, drain: bool, by: str) -> dict[str, Any]:
    with transaction(conn):
        cur = conn.execute("UPDATE drones SET draining = ? WHERE name = ?", (int(drain), name))
        if cur.rowcount == 0:
            raise not_found("drone")
        audit.record(conn, by, "drain" if drain else "undrain", name)
    found = get(conn, name)
    if found is None:
        raise ApiError(404, "not_found", "no such drone")
    return found
