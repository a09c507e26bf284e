"""A task's artifacts: path → content hash, recorded once per (task, path)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from dragoon.relay import quota
from dragoon.relay.db import transaction


def record(conn: sqlite3.Connection, task: str, path: str, sha256: str, size: int) -> str | None:
    """Record an uploaded artifact; the same upload again is fine, other content is an error."""
    with transaction(conn):
        row = conn.execute(
            "SELECT sha256 FROM artifacts WHERE task = ? AND path = ?", (task, path)
        ).fetchone()
        if row is not None:
            same = row["sha256"] == sha256
            return None if same else f"{path} was already uploaded with other content"
        conn.execute(
            "INSERT INTO artifacts (task, path, sha256, size, uploaded_at) VALUES (?, ?, ?, ?, ?)",
            (task, path, sha256, size, time.time()),
        )
        owner = conn.execute("SELECT drone FROM tasks WHERE id = ?", (task,)).fetchone()
        if owner is not None and owner["drone"] is not None:
            quota.charge(conn, owner["drone"], size)  # counted with the record, in one commit
    return None


def listing(conn: sqlite3.Connection, task: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT path, size, sha256, uploaded_at FROM artifacts WHERE task = ? ORDER BY path",
        (task,),
    )
    return [dict(row) for row in rows]


def sha256_of(conn: sqlite3.Connection, task: str, path: str) -> str | None:
    row = conn.execute(
        "SELECT sha256 FROM artifacts WHERE task = ? AND path = ?", (task, path)
    ).fetchone()
    return None if row is None else str(row["sha256"])
