"""The audit trail: who did what and when.

Login, failed login, lock-out, submit, cancel, enroll, fetch, drain.
"""

from __future__ import annotations

import time
from typing import Any

from dragoon.relay.db import Connection


def record(
    conn: Connection, actor: str, action: str, target: str | None = None,
    detail: str | None = None, *, at: float | None = None,
) -> None:
    """Append one audit row; call inside the transaction of the change it records."""
    conn.execute(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        (time.time() if at is None else at, actor, action, target, detail),
    )


def listing(conn: Connection, limit: int, before: int | None) -> list[dict[str, Any]]:
    if before is None:
        rows = conn.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
    else:
        rows = conn.execute(
            "SELECT * FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?", (before, limit)
        )
    return [dict(row) for row in rows]
