"""The pilot's inbox: short messages from running tasks, acknowledged when read.

Each message is sealed by the drone under its task's key (shared/sealed_message.py): the
relay keeps the sealed record, its index in the task, its size and when it came, and
never sees the text.
"""

from __future__ import annotations

import time
from typing import Any

from dragoon.relay.db import Connection, Row, transaction
from dragoon.relay.tasks import FINISHED, own_task, task_finished


def view(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "task": row["task"], "drone": row["drone"], "index": row["idx"],
            "sealed": row["sealed"], "size": row["size"], "created_at": row["created_at"],
            "acked": bool(row["acked"])}


def add(
    conn: Connection, drone: str, task: str, index: int, sealed: str, size: int
) -> tuple[dict[str, Any], bool]:
    """Store a message once per ``(task, index)``; returns it and whether it is new.

    A resend is acknowledged even after the task finished (the drone lost the
    answer); a new message for a finished task is 409 ``task_finished``.
    """
    with transaction(conn):
        task_row = own_task(conn, drone, task)
        row = conn.execute(
            "SELECT * FROM messages WHERE task = ? AND idx = ?", (task, index)
        ).fetchone()
        if row is not None:
            return view(row), False
        if task_row["state"] in FINISHED:
            raise task_finished(task_row, "a new message is refused")
        row = conn.execute(
            "INSERT INTO messages (task, drone, idx, sealed, size, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
            (task, drone, index, sealed, size, time.time()),
        ).fetchall()[0]  # fetched whole: SQLite finishes the statement
    return view(row), True


def listing(
    conn: Connection, *, after: int | None, unread: bool, limit: int,
    job: str | None = None, task: str | None = None,
) -> list[dict[str, Any]]:
    """A page of the inbox, oldest first after ``after``; ``job`` keeps only the messages
    of that job's trials (every attempt), ``task`` only that task's. The pages are the
    same ones with or without a filter: by id, ``after`` the last id seen."""
    where: list[str] = ["id > ?"]
    args: list[Any] = [after or 0]
    if unread:
        where.append("acked = 0")
    if task is not None:
        where.append("task = ?")
        args.append(task)
    if job is not None:
        where.append("task IN (SELECT id FROM tasks WHERE job_id = ?)")
        args.append(job)
    rows = conn.execute(
        f"SELECT * FROM messages WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",  # noqa: S608
        (*args, limit),
    )
    return [view(row) for row in rows]


def ack(conn: Connection, ids: list[int]) -> int:
    with transaction(conn):
        total = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            cur = conn.execute(
                f"UPDATE messages SET acked = 1 WHERE acked = 0 AND id IN"  # noqa: S608
                f" ({','.join('?' * len(chunk))})", chunk,
            )
            total += cur.rowcount
    return total
