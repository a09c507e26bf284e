"""What a test relay holds of a task's stdin and of unfinished uploads, on either backend.

A relay keeps these as files in its data dir, or as rows when its relay.toml names a
PostgreSQL ``database`` (relay/stores.py); the tests that check what is left behind ask
here instead of looking at one layout.
"""

from __future__ import annotations

import json
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
