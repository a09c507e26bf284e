"""Upgrades: a relay started on an old data dir migrates it forward and serves its old rows.

The old data dir is tests/relay/fixtures/relay-v1/, made by make_relay_v1.py
with the first migration alone (schema version 1). Every migration appended
since runs when today's relay opens it, so this test exercises each of them.

On PostgreSQL (DRAGOON_TEST_BACKEND=postgresql) a relay never reads relay.db, so the old
data dir goes the way an operator's would: ``relay migrate --from --to`` (docs/storage.md)
brings relay.db to today's schema (the SQLite migrations, as above) and moves it into the
relay's database, and the relay then serves the same old rows from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from dragoon.relay import pg_migrate
from dragoon.relay.db import SCHEMA_VERSION

from tests.relay.fixtures import make_relay_v1 as v1
from tests.support.relay import RelayProcess, configured_database, dragoon, relay_db, wait_until
from tests.support.stored import blob_stored

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "relay-v1"
OLD = 1_600_000_000.0


def _lay_old_data_dir(data_dir: Path) -> None:
    """Replace what ``relay init`` made with the old relay's database, logs and blobs."""
    for name in ("relay.db", "relay.db-wal", "relay.db-shm"):
        (data_dir / name).unlink(missing_ok=True)
    shutil.copy(FIXTURE / "relay.db", data_dir / "relay.db")
    for sub in ("logs", "blobs"):
        shutil.rmtree(data_dir / sub)
        shutil.copytree(FIXTURE / sub, data_dir / sub)
    for path in (data_dir / "blobs").rglob("*"):
        os.utime(path, (OLD, OLD))  # as old as the rows: a checkout would make them new


def _move_to_postgresql(data_dir: Path) -> None:
    """The old SQLite data dir into the PostgreSQL database relay init made for it, in one
    ``relay migrate --from``: it brings the old relay.db to today's schema first."""
    url = configured_database(data_dir)
    toml = data_dir / "relay.toml"
    lines = [line for line in toml.read_text().splitlines()
             if line.split("=", 1)[0].strip() != "database"]
    toml.write_text("\n".join(lines) + "\n")  # a SQLite relay, as the old one was
    moved = dragoon("relay", "migrate", "--from", str(data_dir), "--to", url, check=False)
    assert moved.returncode == 0, moved.stderr
    assert f"relay.db: schema {v1.VERSION} -> {SCHEMA_VERSION} first" in moved.stdout, \
        moved.stdout
    assert configured_database(data_dir) == url


def _schema_version(data_dir: Path) -> int:
    with relay_db(data_dir) as conn:
        if configured_database(data_dir):
            return pg_migrate.version(conn)
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _columns(data_dir: Path, table: str) -> set[str]:
    with relay_db(data_dir) as conn:
        if configured_database(data_dir):
            return {r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ?", (table,))}
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def _storage(data_dir: Path) -> dict[str, int]:
    with relay_db(data_dir) as conn:
        return {r["drone"]: int(r["bytes"]) for r in conn.execute("SELECT * FROM storage")}


def test_fixture_is_an_old_schema() -> None:
    with sqlite3.connect(FIXTURE / "relay.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == v1.VERSION < SCHEMA_VERSION


def test_old_data_dir_is_migrated_and_served(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.2, "retention": "none"})
    _lay_old_data_dir(relay.data_dir)
    on_postgresql = bool(configured_database(relay.data_dir))
    if on_postgresql:
        _move_to_postgresql(relay.data_dir)
    with relay:
        assert _schema_version(relay.data_dir) == (
            len(pg_migrate.available()) if on_postgresql else SCHEMA_VERSION)
        with relay_db(relay.data_dir) as conn:
            session = conn.execute("SELECT pilot, expires_at FROM sessions").fetchone()
            assert (session["pilot"], float(session["expires_at"])) == ("old-pilot",
                                                                        4_102_444_800.0)
        pilot = relay.pilot("bob")

        tasks = {t["id"]: t for t in pilot.get("/v1/tasks").json()["tasks"]}
        assert {k: (v["state"], v["exit_code"]) for k, v in tasks.items()} == {
            "t-aaaaaaaaaa": ("succeeded", 0), "t-bbbbbbbbbb": ("failed", 3),
            "t-cccccccccc": ("queued", None)}
        assert tasks["t-aaaaaaaaaa"]["stdout_size"] == len(v1.STDOUT)
        log = pilot.get("/v1/tasks/t-aaaaaaaaaa/log", params={"stream": "stdout"})
        assert log.content == v1.STDOUT
        assert pilot.get("/v1/tasks/t-bbbbbbbbbb/log",
                         params={"stream": "stderr"}).content == v1.STDERR
        artifact = pilot.get("/v1/tasks/t-aaaaaaaaaa/artifact", params={"path": "result.txt"})
        assert artifact.content == v1.ARTIFACT
        assert pilot.get("/v1/fetches/f-aaaaaaaaaa/content").content == v1.FETCHED
        # Migration 12: the relay keeps sealed messages only; the plaintext ones it kept are
        # gone with their column (no pilot could tell them from forged ones).
        assert pilot.get("/v1/messages").json()["messages"] == []
        assert "text" not in _columns(relay.data_dir, "messages")
        drones = {d["name"]: d for d in pilot.get("/v1/workers").json()["drones"]}
        assert drones["old-drone"]["state"] == "offline"

        # Migration 2 counted the artifact and the fetched file; the relay counted the
        # old logs from the disk after start-up.
        whole = len(v1.STDOUT) + len(v1.STDERR) + len(v1.ARTIFACT) + len(v1.FETCHED)
        wait_until(lambda: _storage(relay.data_dir) == {"old-drone": whole}, timeout=20,
                   message="old logs counted")

        # The old rows age like any other: gc prunes the finished tasks, keeps the queued one.
        out = dragoon("relay", "gc", "--data", str(relay.data_dir), "--older-than", "30d",
                      "--json").stdout
        report: dict[str, Any] = json.loads(out)
        assert (report["tasks"], report["log_bytes"], report["artifacts"], report["messages"],
                report["fetches"]) == (2, len(v1.STDOUT) + len(v1.STDERR), 1, 0, 1)
        assert report["blob_bytes"] == len(v1.ARTIFACT) + len(v1.FETCHED)
        assert report["storage"]["drones"] == {"old-drone": 0}
        kept = pilot.get("/v1/tasks/t-aaaaaaaaaa").json()
        assert (kept["state"], kept["exit_code"], kept["finished_at"]) == ("succeeded", 0,
                                                                          OLD + 60)
        assert kept["stdout_size"] == 0
        assert pilot.get("/v1/tasks/t-cccccccccc").json()["state"] == "queued"
        assert pilot.get("/v1/fetches/f-aaaaaaaaaa").status_code == 404
        assert not blob_stored(relay.data_dir, hashlib.sha256(v1.ARTIFACT).hexdigest())
