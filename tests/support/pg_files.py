"""A fresh PostgreSQL database holding the files' tables, for the stores' own tests.

``files_database()`` applies relay/migrations/postgresql/0002_files.sql directly; once the
relay's migration runner is on main this is the one place to call it instead.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.pg import new_database

FILES_SQL = Path(__file__).resolve().parents[2] / "relay/migrations/postgresql/0002_files.sql"


def apply_files_schema(url: str) -> None:
    import psycopg

    with psycopg.connect(url) as conn:  # one transaction: all of it or nothing
        conn.execute(FILES_SQL.read_text(encoding="utf-8"))


def files_database() -> str:
    url = new_database("dragoon_files")
    apply_files_schema(url)
    return url
