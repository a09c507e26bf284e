"""The schema: versioned, migrated once, refused when newer than this relay; WAL mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from dragoon.relay import db


def test_new_database_is_migrated_to_the_current_version_in_wal_mode(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "relay.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert (tmp_path / "relay.db").stat().st_mode & 0o077 == 0


def test_reopening_does_not_migrate_again(tmp_path: Path) -> None:
    db.connect(tmp_path / "relay.db").close()
    conn = db.connect(tmp_path / "relay.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"tasks", "drones", "nonces", "sessions", "audit"} <= tables


def test_database_from_a_newer_relay_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "relay.db") as conn:
        conn.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    with pytest.raises(db.SchemaTooNew):
        db.connect(tmp_path / "relay.db")


def test_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "relay.db")
    with pytest.raises(RuntimeError), db.transaction(conn):
        conn.execute("INSERT INTO nonces (nonce, expires_at) VALUES ('a', 0)")
        raise RuntimeError("crash mid-change")
    assert conn.execute("SELECT COUNT(*) FROM nonces").fetchone()[0] == 0
