"""What a test relay holds of a task's stdin and of unfinished uploads, on either backend.

A relay keeps these as files in its data dir, or as rows when its relay.toml names a
PostgreSQL ``database`` (relay/stores.py); the tests that check what is left behind ask
here instead of looking at one layout.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any


def database_of(data_dir: Path) -> str:
    path = data_dir / "relay.toml"
    values = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return str(values.get("database", "") or "")


def _rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, args).fetchall())


def stdin_held(data_dir: Path, task: str) -> dict[str, int] | None:
    """``{"end", "acked", "chunks"}`` of a task's stdin, None when the relay holds none."""
    url = database_of(data_dir)
    if url:
        rows = _rows(url, 'SELECT "end", acked, (SELECT count(*) FROM stdin_chunks c'
                          " WHERE c.task = s.task) FROM stdin_state s WHERE task = %s", task)
        if not rows:
            return None
        return {"end": int(rows[0][0]), "acked": int(rows[0][1]), "chunks": int(rows[0][2])}
    folder = data_dir / "stdin" / task
    if not folder.exists():
        return None
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        state = {"end": 0, "acked": 0}
    chunks = sum(1 for p in folder.iterdir() if p.name.isdigit())
    return {"end": int(state["end"]), "acked": int(state["acked"]), "chunks": chunks}


def upload_leftovers(data_dir: Path) -> int:
    """What unfinished or refused uploads left: temporary files, or chunk rows no blob owns."""
    url = database_of(data_dir)
    if url:
        return int(_rows(url, "SELECT count(*) FROM blob_chunks c WHERE NOT EXISTS"
                              " (SELECT 1 FROM blobs b WHERE b.blob_id = c.blob_id)")[0][0])
    return len(list((data_dir / "blobs" / "tmp").iterdir()))


def upload_in_progress(data_dir: Path) -> int:
    """Above 0 while an upload is being written: the bytes in blobs/tmp, or (on PostgreSQL,
    where an upload's rows stay invisible until they commit) the uploads whose transaction
    is open."""
    url = database_of(data_dir)
    if url:
        return int(_rows(url, "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                              " current_database() AND state LIKE 'idle in transaction%%'"
                              " AND (query LIKE '%%blob_ids%%' OR query LIKE '%%blob_chunks%%')"
                         )[0][0])
    tmp = data_dir / "blobs" / "tmp"
    return sum(p.stat().st_size for p in tmp.iterdir()) if tmp.exists() else 0


def blob_stored(data_dir: Path, digest: str) -> bool:
    url = database_of(data_dir)
    if url:
        return bool(_rows(url, "SELECT 1 FROM blobs WHERE sha256 = %s", digest))
    return (data_dir / "blobs" / digest[:2] / digest).exists()


def log_size(data_dir: Path, task: str, stream: str = "stdout") -> int:
    url = database_of(data_dir)
    if url:
        rows = _rows(url, f"SELECT {stream}_size FROM log_state WHERE task = %s", task)  # noqa: S608
        return int(rows[0][0]) if rows else 0
    path = data_dir / "logs" / task / stream
    return path.stat().st_size if path.exists() else 0


def log_bytes(data_dir: Path, task: str, stream: str = "stdout") -> bytes:
    """The bytes the relay has committed of a task's stream: its log file, or its
    log_chunks rows, which must lie end to end up to log_state's size (b"" for none).
    On PostgreSQL both are read in one REPEATABLE READ snapshot: appends may still be
    landing (test_crash ships on through a restart), and two separate reads would see
    the size of a chunk committed between them."""
    url = database_of(data_dir)
    if url:
        import psycopg

        with psycopg.connect(url) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction():
                chunks = conn.execute('SELECT "offset", data FROM log_chunks WHERE task = %s'
                                      ' AND stream = %s ORDER BY "offset"',
                                      (task, stream)).fetchall()
                sizes = conn.execute(f"SELECT {stream}_size FROM log_state"  # noqa: S608
                                     " WHERE task = %s", (task,)).fetchall()
        out = bytearray()
        for offset, data in chunks:
            assert offset == len(out), f"{task}/{stream}: a chunk at {offset}, not {len(out)}"
            out += data
        size = int(sizes[0][0]) if sizes else 0
        assert len(out) == size, f"{task}/{stream}: {len(out)} bytes in chunks, log_state {size}"
        return bytes(out)
    path = data_dir / "logs" / task / stream
    return path.read_bytes() if path.exists() else b""


def log_held(data_dir: Path, task: str) -> bool:
    """Whether the relay keeps anything of the task's log (retention removes all of it)."""
    url = database_of(data_dir)
    if url:
        return bool(_rows(url, "SELECT 1 FROM log_state WHERE task = %s", task))
    return (data_dir / "logs" / task).exists()


def age_blobs(data_dir: Path, when: float) -> None:
    """Make every stored blob look last touched at ``when`` (retention spares recent ones)."""
    url = database_of(data_dir)
    if url:
        _rows(url, "UPDATE blobs SET stored_at = %s RETURNING 1", when)
        return
    for path in (data_dir / "blobs").glob("??/*"):
        os.utime(path, (when, when))


def plant_blob(data_dir: Path, data: bytes, when: float | None = None) -> None:
    """Store ``data`` as a blob no record names, as a crash between the upload and its
    record would leave it; touched at ``when`` (now by default)."""
    import hashlib
    import time

    digest = hashlib.sha256(data).hexdigest()
    stamp = time.time() if when is None else when
    url = database_of(data_dir)
    if url:
        _rows(url, "WITH id AS (SELECT nextval('blob_ids') AS v), b AS (INSERT INTO blobs"
                   " (sha256, blob_id, size, chunk_size, stored_at) SELECT %s, v, %s, %s, %s"
                   " FROM id) INSERT INTO blob_chunks (blob_id, idx, data) SELECT v, 0, %s"
                   " FROM id RETURNING 1", digest, len(data), 1 << 20, stamp, data)
        return
    path = data_dir / "blobs" / digest[:2] / digest
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (stamp, stamp))


def plant_stale_upload(data_dir: Path, data: bytes, when: float) -> Path | None:
    """An upload a crash cut short: a temporary file on disk, or nothing at all on
    PostgreSQL (its rows were never committed); the file, or None."""
    if database_of(data_dir):
        return None
    path = data_dir / "blobs" / "tmp" / "0123abcd"
    path.write_bytes(data)
    os.utime(path, (when, when))
    return path
