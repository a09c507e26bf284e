"""Blobs by content hash in PostgreSQL: relay/blobs.py's ``BlobStore``, with rows for files.

Artifacts and fetched files of a relay whose ``database`` is a PostgreSQL URL. The same
promise as on files: an upload is stored only when its size and SHA-256 are what the
drone declared (and signed), within the cap; any other body, or one cut short, leaves
nothing; storing the same content twice keeps one copy.

An upload takes a connection of the store's pool for its whole body and writes it, in
fixed-size chunks (``CHUNK`` bytes, the last one shorter), as ``blob_chunks`` rows under a
fresh ``blob_id`` inside one transaction, while it hashes and counts it. ``keep`` adds the
``blobs`` row (sha256 → blob_id, size) and commits; a refused body, a hang-up or
``discard`` rolls the transaction back, so no row of it was ever visible. When the content
is already stored (``ON CONFLICT`` finds its row, or waits for a concurrent upload of the
same content to commit first), the existing row is touched in the same transaction and
the new chunks are deleted before it commits: retention spares a blob touched within its
grace, and the touch and the dedup are one step.

Downloads stream the chunks a row at a time, each read on a worker thread with a pooled
connection held only for that row, and answer a single ``Range`` with 206, as
Starlette's FileResponse does for the file store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import psycopg
from dragoon.relay.blobs import SHA256, check_declared
from dragoon.relay.errors import ApiError
from fastapi.responses import Response
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.types import Receive, Scope, Send

CHUNK: Final = 1 << 20  # bytes per blob_chunks row (docs/benchmarks.md, files on PostgreSQL)
CONNECT_WAIT: Final = 10.0  # seconds an upload or download waits for a free connection


@dataclass(eq=False)
class PgUpload:
    """A received, checked body, not yet committed: ``keep`` commits it, ``discard`` drops it."""

    conn: psycopg.Connection[Any] | None
    blob_id: int
    size: int


@dataclass(frozen=True)
class BlobRow:
    blob_id: int
    size: int
    chunk_size: int


class PgBlobStore:
    """Artifacts and fetched files by content hash, in PostgreSQL."""

    def __init__(self, url: str, *, pool_size: int = 8, chunk: int = CHUNK) -> None:
        self.chunk = chunk
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size,
                                    kwargs={"autocommit": True, "connect_timeout": 10,
                                            "application_name": "dragoon-relay-blobs"},
                                    open=True, name="relay-blobs")

    def close(self) -> None:
        self._pool.close()

    @staticmethod
    def check(sha256: str) -> None:
        if not SHA256.fullmatch(sha256):
            raise ApiError(422, "invalid", "sha256 must be 64 lowercase hex digits")

    def find(self, sha256: str) -> BlobRow | None:
        self.check(sha256)
        with self._pool.connection(timeout=CONNECT_WAIT) as conn:
            row = conn.execute("SELECT blob_id, size, chunk_size FROM blobs WHERE sha256 = %s",
                               (sha256,)).fetchone()
        return None if row is None else BlobRow(int(row[0]), int(row[1]), int(row[2]))

    def exists(self, sha256: str) -> bool:
        return self.find(sha256) is not None

    def check_declared(self, *, size: int, cap: int, content_length: str | None) -> None:
        check_declared(size=size, cap=cap, content_length=content_length)

    # -- uploads -------------------------------------------------------------------------

    async def receive(
        self, chunks: AsyncIterator[bytes], *, sha256: str, size: int, cap: int
    ) -> PgUpload:
        """Stream the body into uncommitted rows that hold exactly the declared bytes, or
        raise (and roll them back): a hash or length other than declared, more than the
        cap, or the drone hanging up midway."""
        self.check(sha256)
        if size > cap:
            raise ApiError(413, "too_large", f"a file may be at most {cap} bytes")
        upload = await asyncio.to_thread(self._begin, size)
        digest = hashlib.sha256()
        received = 0
        pending = bytearray()
        idx = 0
        try:
            async for piece in chunks:
                received += len(piece)
                if received > size or received > cap:
                    raise ApiError(413, "too_large", f"the body is larger than the declared {size}")
                digest.update(piece)
                pending += piece
                while len(pending) >= self.chunk:
                    await asyncio.to_thread(self._insert, upload, idx, bytes(pending[:self.chunk]))
                    del pending[:self.chunk]
                    idx += 1
            if received != size:
                raise ApiError(400, "size_mismatch", f"declared {size} bytes, received {received}")
            if digest.hexdigest() != sha256:
                raise ApiError(400, "hash_mismatch",
                               f"the body hashes to {digest.hexdigest()}, not {sha256}")
            if pending:
                await asyncio.to_thread(self._insert, upload, idx, bytes(pending))
        except BaseException:
            # Shielded: a request cancelled midway still gives its connection back.
            await asyncio.shield(asyncio.to_thread(self.discard, upload))
            raise
        return upload

    def _begin(self, size: int) -> PgUpload:
        try:
            conn = self._pool.getconn(timeout=CONNECT_WAIT)
        except PoolTimeout:
            raise ApiError(503, "busy", "every upload connection is taken; retry") from None
        try:
            conn.execute("BEGIN")
            row = conn.execute("SELECT nextval('blob_ids')").fetchone()
            assert row is not None
        except BaseException:
            self._give_back(conn, rollback=True)
            raise
        return PgUpload(conn, int(row[0]), size)

    @staticmethod
    def _insert(upload: PgUpload, idx: int, data: bytes) -> None:
        assert upload.conn is not None
        upload.conn.execute("INSERT INTO blob_chunks (blob_id, idx, data) VALUES (%s, %s, %s)",
                            (upload.blob_id, idx, data))

    def keep(self, upload: PgUpload, sha256: str) -> None:
        """Commit a checked upload under its hash (or drop it when that content is stored)."""
        self.check(sha256)
        conn = upload.conn
        if conn is None:
            raise RuntimeError("this upload was already kept or discarded")
        # One statement adds the row or touches the stored one and locks it: retention
        # (relay/pg_retention.py) deletes only rows untouched for its grace, and waits on
        # this lock, so content found stored here cannot vanish before this commits.
        row = conn.execute(
            "INSERT INTO blobs (sha256, blob_id, size, chunk_size, stored_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (sha256)"
            " DO UPDATE SET stored_at = excluded.stored_at RETURNING blob_id",
            (sha256, upload.blob_id, upload.size, self.chunk, time.time())).fetchone()
        assert row is not None
        if int(row[0]) != upload.blob_id:  # already stored: this copy goes
            conn.execute("DELETE FROM blob_chunks WHERE blob_id = %s", (upload.blob_id,))
        conn.execute("COMMIT")
        upload.conn = None
        self._pool.putconn(conn)

    def discard(self, upload: PgUpload) -> None:
        conn, upload.conn = upload.conn, None
        if conn is not None:
            self._give_back(conn, rollback=True)

    def _give_back(self, conn: psycopg.Connection[Any], *, rollback: bool) -> None:
        if rollback:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        self._pool.putconn(conn)  # the pool discards a broken connection

    # -- reads ---------------------------------------------------------------------------

    def read(self, sha256: str, offset: int = 0, limit: int | None = None) -> bytes:
        """Bytes ``[offset, offset + limit)`` of a stored blob (all of it by default)."""
        found = self.find(sha256)
        if found is None:
            raise ApiError(404, "not_found", "the blob is missing from the relay's store")
        end = found.size if limit is None else min(found.size, offset + limit)
        return b"".join(self.pieces(found, offset, end))

    def pieces(self, found: BlobRow, start: int, end: int) -> list[bytes]:
        return [self.piece(found, idx, lo, hi) for idx, lo, hi in spans(found, start, end)]

    def piece(self, found: BlobRow, idx: int, lo: int, hi: int) -> bytes:
        """Bytes ``[lo, hi)`` of chunk ``idx``: substring reads only those (no compression)."""
        with self._pool.connection(timeout=CONNECT_WAIT) as conn:
            row = conn.execute(
                "SELECT substring(data FROM %s FOR %s) FROM blob_chunks"
                " WHERE blob_id = %s AND idx = %s", (lo + 1, hi - lo, found.blob_id, idx),
                binary=True).fetchone()
        if row is None or len(row[0]) != hi - lo:
            raise OSError(f"blob {found.blob_id} chunk {idx} is missing or short")
        return bytes(row[0])

    def response(self, sha256: str, filename: str) -> Response:
        found = self.find(sha256)
        if found is None:
            raise ApiError(404, "not_found", "the blob is missing from the relay's store")
        return BlobDownload(self, found, filename, sha256)


def spans(found: BlobRow, start: int, end: int) -> list[tuple[int, int, int]]:
    """(chunk index, start, end within it) for bytes ``[start, end)`` of the blob."""
    out: list[tuple[int, int, int]] = []
    size = found.chunk_size
    position = start
    while position < end:
        idx = position // size
        lo = position - idx * size
        hi = min(size, end - idx * size)
        out.append((idx, lo, hi))
        position = idx * size + hi
    return out


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """A single ``bytes=`` range as ``(start, end)``; None to send it all (no header, or one
    this store does not serve partly: several ranges, other units, bad syntax); False
    when it cannot be satisfied (416)."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not first:
        if not last.isdigit() or int(last) == 0:
            return None if not last.isdigit() else False
        return max(size - int(last), 0), size
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        return False
    return start, end


class BlobDownload(Response):
    """A stored blob streamed from its rows; one ``Range`` gets 206, as FileResponse does."""

    media_type = "application/octet-stream"

    def __init__(self, store: PgBlobStore, found: BlobRow, filename: str, sha256: str) -> None:
        super().__init__(content=None, media_type=self.media_type,
                         headers={"X-Dragoon-Sha256": sha256, "accept-ranges": "bytes"})
        self.store = store
        self.found = found
        quoted = quote(filename)
        if quoted != filename:
            self.headers["content-disposition"] = f"attachment; filename*=utf-8''{quoted}"
        else:
            self.headers["content-disposition"] = f'attachment; filename="{filename}"'

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = self.found.size
        asked = None
        for name, value in scope.get("headers", []):
            if name == b"range":
                asked = parse_range(value.decode("latin-1"), size)
        headers = {k: v for k, v in self.headers.items() if k != "content-length"}
        if asked is False:
            headers["content-range"] = f"bytes */{size}"
            headers["content-length"] = "0"
            await send({"type": "http.response.start", "status": 416,
                        "headers": _raw(headers)})
            await send({"type": "http.response.body", "body": b""})
            return
        start, end = (0, size) if asked is None else asked
        status = 200 if asked is None else 206
        if asked is not None:
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        headers["content-length"] = str(end - start)
        await send({"type": "http.response.start", "status": status, "headers": _raw(headers)})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        parts = spans(self.found, start, end)
        for n, (idx, lo, hi) in enumerate(parts):
            body = await asyncio.to_thread(self.store.piece, self.found, idx, lo, hi)
            await send({"type": "http.response.body", "body": body,
                        "more_body": n + 1 < len(parts)})
        if not parts:
            await send({"type": "http.response.body", "body": b""})


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
