"""A task's artifacts: name → content hash, recorded once per (task, name).

The name (the ``path`` column, kept for the route's sake) is opaque, the artifact's index
in its task: the file is sealed under the task key, its path, size and hash in the sealed
``meta`` beside it (shared/sealed_files.py). The relay reads neither.

The drone uploads them after the task exits and before it reports the finish;
after the finish only a resend of a recorded one is acknowledged.
"""

from __future__ import annotations

import time
from typing import Any

from dragoon.relay import quota
from dragoon.relay.db import Connection, Row, transaction
from dragoon.relay.errors import ApiError
from dragoon.relay.tasks import FINISHED, own_task, task_finished


def _judge(
    conn: Connection, task_row: Row, path: str, sha256: str
) -> dict[str, Any] | None:
    """The recorded artifact when this is a resend of it, None when it may be stored, or raise."""
    row = conn.execute(
        "SELECT sha256, size FROM artifacts WHERE task = ? AND path = ?", (task_row["id"], path)
    ).fetchone()
    if row is not None:
        if row["sha256"] != sha256:
            raise ApiError(409, "conflict", f"{path} was already uploaded with other content")
        return {"sha256": row["sha256"], "size": row["size"]}
    if task_row["state"] in FINISHED:
        raise task_finished(task_row, "a new artifact is refused")
    return None


def admit(
    conn: Connection, drone: str, task: str, path: str, sha256: str
) -> dict[str, Any] | None:
    """Before the body is read: 404 for a task not this drone's, the recorded artifact for
    a resend (no need to read it again), 409 for other content or a finished task."""
    return _judge(conn, own_task(conn, drone, task), path, sha256)


def record(
    conn: Connection, drone: str, task: str, path: str, sha256: str, size: int,
    meta: str | None = None,
) -> None:
    """Record an uploaded artifact, judged again in the transaction (a finish may have raced)."""
    with transaction(conn):
        if _judge(conn, own_task(conn, drone, task), path, sha256) is not None:
            return
        conn.execute(
            "INSERT INTO artifacts (task, path, sha256, size, uploaded_at, meta)"
            " VALUES (?, ?, ?, ?, ?, ?)", (task, path, sha256, size, time.time(), meta),
        )
        quota.charge(conn, drone, size)  # counted with the record, in one commit


def listing(conn: Connection, task: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT path, size, sha256, uploaded_at, meta FROM artifacts WHERE task = ?"
        " ORDER BY path",
        (task,),
    )
    return [dict(row) for row in rows]


def sha256_of(conn: Connection, task: str, path: str) -> str | None:
    row = conn.execute(
        "SELECT sha256 FROM artifacts WHERE task = ? AND path = ?", (task, path)
    ).fetchone()
    return None if row is None else str(row["sha256"])
