"""PostgreSQL migrations: plain SQL files applied in order, each once, under the write lock.

``relay/migrations/postgresql/NNNN_name.sql`` are the steps (never edit one that has
shipped: add the next). ``schema_migrations`` records each applied version. Every
step runs in one transaction that first takes the relay's write lock (relay/pg.py), and
looks again under it at what is applied: replicas that start at once on a new database
migrate it once, the later ones find the work done. A database that records a version
this relay does not know was migrated by a newer relay: refused, as SQLite's is.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Final

from dragoon.relay.db import SchemaTooNew, transaction
from dragoon.relay.pg import PgConnection

_NAME: Final = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

TRACKING: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The shipped steps, by version; numbered 1, 2, … with none missing."""
    folder = resources.files("dragoon.relay").joinpath("migrations", "postgresql")
    found = []
    for entry in folder.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"PostgreSQL migrations are not numbered 1..n: "
                           f"{[m.version for m in found]}")
    return found


def applied(conn: PgConnection) -> set[int]:
    return {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}


def migrate(conn: PgConnection) -> list[int]:
    """Apply what is missing; the versions this call applied (others may have done the rest)."""
    steps = available()
    with transaction(conn):
        conn.execute(TRACKING)
        done = applied(conn)
    newest = max(done, default=0)
    if newest > len(steps):
        raise SchemaTooNew(f"the database has schema {newest}; this relay knows {len(steps)}")
    ran = []
    for step in steps:
        if step.version in done:
            continue
        with transaction(conn):
            if step.version in applied(conn):  # another replica got here first
                continue
            conn.script(step.sql)
            conn.execute("INSERT INTO schema_migrations (version, name, applied_at)"
                         " VALUES (?, ?, ?)", (step.version, step.name, time.time()))
        ran.append(step.version)
    return ran


def version(conn: PgConnection) -> int:
    return max(applied(conn), default=0)
