"""Files on PostgreSQL: chunked BYTEA rows beside large objects, and the stores as built.

Run from the checkout: ``.venv/bin/python bench/bench_pg_files.py [--url URL] [--mib N]``
(about a minute on the local server; ``DRAGOON_TEST_PG`` or the local server by default).
It creates a throwaway database, applies relay/migrations/postgresql/0002_files.sql, and
drops the database at the end. MB/s are 10^6 bytes per second.

What is measured:

- append, one stream, one 64 KiB chunk per commit (what an acknowledged chunk costs when
  nothing shares its commit): ``log_chunks`` rows (INSERT + state UPDATE, COMMIT) beside
  one large object per log (``lo_put`` at the offset, COMMIT).
- append through ``PgOutputStore`` (relay/pg_output.py) with 16 streams side by side,
  64 KiB chunks: what group commit makes of it.
- read of an N MiB log (100 by default) in the 1 MiB pieces a pilot's follow asks for:
  rows (``PgOutputStore.read``) beside ``lo_get`` on the large object.
- blobs: an N MiB upload through ``PgBlobStore`` (receive + keep), 256 KiB and 1 MiB
  chunk rows, and the whole download read back.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from dragoon.relay.pg_blobs import PgBlobStore
from dragoon.relay.pg_output import PgOutputStore

from tests.support.pg import drop_database, new_database
from tests.support.pg_files import apply_files_schema

CHUNK = 64 << 10
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def task_id() -> str:
    return "t-" + "".join(secrets.choice(ALPHABET) for _ in range(10))


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def rows_append(url: str, count: int) -> float:
    data = os.urandom(CHUNK)
    task = task_id()
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO log_state (task) VALUES (%s)", (task,))
        conn.commit()
        start = time.perf_counter()
        for n in range(count):
            conn.execute("SELECT stdout_size FROM log_state WHERE task = %s FOR UPDATE",
                         (task,))
            conn.execute('INSERT INTO log_chunks (task, stream, "offset", data)'
                         " VALUES (%s, 'stdout', %s, %s)", (task, n * CHUNK, data))
            conn.execute("UPDATE log_state SET stdout_size = %s WHERE task = %s",
                         ((n + 1) * CHUNK, task))
            conn.commit()
        return time.perf_counter() - start


def lo_append(url: str, count: int) -> tuple[float, int]:
    data = os.urandom(CHUNK)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT lo_create(0)").fetchone()
        assert row is not None
        oid = int(row[0])
        conn.commit()
        start = time.perf_counter()
        for n in range(count):
            conn.execute("SELECT lo_put(%s, %s, %s)", (oid, n * CHUNK, data))
            conn.commit()
        return time.perf_counter() - start, oid


def lo_read(url: str, oid: int, total: int, piece: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        got = 0
        while got < total:
            row = conn.execute("SELECT lo_get(%s, %s, %s)", (oid, got, piece),
                               binary=True).fetchone()
            assert row is not None
            got += len(row[0])
        return time.perf_counter() - start


def store_append(url: str, streams: int, per_stream: int) -> float:
    store = PgOutputStore(url, cap=1 << 40)
    data = os.urandom(CHUNK)
    tasks = [task_id() for _ in range(streams)]

    async def feed(task: str) -> None:
        for n in range(per_stream):
            await store.append(task, "stdout", n * CHUNK, data)

    async def go() -> None:
        await asyncio.gather(*(feed(task) for task in tasks))

    try:
        start = time.perf_counter()
        asyncio.run(go())
        return time.perf_counter() - start
    finally:
        store.close()


def store_fill_and_read(url: str, total: int, piece: int) -> tuple[float, float]:
    store = PgOutputStore(url, cap=1 << 40)
    task = task_id()
    data = os.urandom(CHUNK)

    async def fill() -> None:
        # 8 chunks in flight, as a drone's shipper keeps a window: batches of 8 commits.
        for base in range(0, total // CHUNK, 8):
            await asyncio.gather(*(store.append(task, "stdout", (base + k) * CHUNK, data)
                                   for k in range(8) if base + k < total // CHUNK))

    try:
        start = time.perf_counter()
        asyncio.run(fill())
        filled = time.perf_counter() - start
        start = time.perf_counter()
        got = 0
        while got < total:
            got += len(store.read(task, "stdout", got, piece))
        return filled, time.perf_counter() - start
    finally:
        store.close()


def blob_round(url: str, total: int, chunk: int) -> tuple[float, float]:
    store = PgBlobStore(url, chunk=chunk)
    data = os.urandom(total)
    sha = hashlib.sha256(data).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for at in range(0, total, CHUNK):
            yield data[at:at + CHUNK]

    async def up() -> None:
        received = await store.receive(body(), sha256=sha, size=total, cap=total)
        store.keep(received, sha)

    try:
        start = time.perf_counter()
        asyncio.run(up())
        uploaded = time.perf_counter() - start
        start = time.perf_counter()
        back = store.read(sha)
        read = time.perf_counter() - start
        assert back == data
        return uploaded, read
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=100, help="size of the log/blob read")
    parser.add_argument("--commits", type=int, default=400, help="single-chunk commits")
    args = parser.parse_args()
    url = new_database("dragoon_bench")
    results: list[tuple[str, Any]] = []
    try:
        apply_files_schema(url)
        total = args.mib << 20
        seconds = rows_append(url, args.commits)
        results.append(("append 64 KiB, commit each: rows",
                        f"{args.commits / seconds:,.0f} chunks/s, "
                        f"{mbps(args.commits * CHUNK, seconds):.0f} MB/s"))
        seconds, _ = lo_append(url, args.commits)
        results.append(("append 64 KiB, commit each: large object",
                        f"{args.commits / seconds:,.0f} chunks/s, "
                        f"{mbps(args.commits * CHUNK, seconds):.0f} MB/s"))
        seconds = store_append(url, 16, 50)
        results.append(("PgOutputStore, 16 streams x 50 chunks of 64 KiB",
                        f"{800 / seconds:,.0f} chunks/s, {mbps(800 * CHUNK, seconds):.0f} MB/s"))
        filled, read = store_fill_and_read(url, total, 1 << 20)
        results.append((f"PgOutputStore fill {args.mib} MiB (8 in flight)",
                        f"{mbps(total, filled):.0f} MB/s"))
        results.append((f"PgOutputStore read {args.mib} MiB in 1 MiB reads",
                        f"{read:.2f} s, {mbps(total, read):.0f} MB/s"))
        _, oid = lo_append(url, total // CHUNK)
        read = lo_read(url, oid, total, 1 << 20)
        results.append((f"large object read {args.mib} MiB in 1 MiB reads",
                        f"{read:.2f} s, {mbps(total, read):.0f} MB/s"))
        for chunk in (256 << 10, 1 << 20):
            up, down = blob_round(url, total, chunk)
            results.append((f"PgBlobStore {args.mib} MiB, {chunk >> 10} KiB rows: up / read",
                            f"{mbps(total, up):.0f} / {mbps(total, down):.0f} MB/s"))
    finally:
        drop_database(url)
    width = max(len(name) for name, _ in results)
    for name, value in results:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
