"""Retention's deletions for a relay on PostgreSQL: logs and blobs are rows, not files.

relay/retention.py decides what is due and prunes the records; this is its ``Space``
for the rows relay/pg_output.py and relay/pg_blobs.py keep, used by the sweeper and by
``dragoon relay gc`` when ``database`` is a PostgreSQL URL. The same rules as for files:
a blob touched within ``BLOB_GRACE`` stays (an upload may be about to refer to it: its
``keep`` touches the row, and the delete below re-checks the time under the row's lock,
so the two cannot cross), a row already gone is no error, and the orphan pass drops
content that no artifact or fetch names. Uploads that never finished leave nothing to
collect: their rows were never committed.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg
from dragoon.relay.retention import BLOB_GRACE, DbCall, Report, _referenced

ORPHAN_BATCH: Final = 400


class PgSpace:
    """Deletes pruned tasks' logs and unreferenced blobs, on a connection of its own."""

    def __init__(self, url: str) -> None:
        self._conn: psycopg.Connection[Any] = psycopg.connect(
            url, autocommit=True, connect_timeout=10, application_name="dragoon-relay-retention")

    def close(self) -> None:
        self._conn.close()

    def remove_logs(self, task: str, report: Report, *, dry_run: bool) -> int:
        conn = self._conn
        if dry_run:
            row = conn.execute("SELECT stdout_size, stderr_size, order_size FROM log_state"
                               " WHERE task = %s", (task,)).fetchone()
        else:
            with conn.transaction():
                row = conn.execute("DELETE FROM log_state WHERE task = %s"
                                   " RETURNING stdout_size, stderr_size, order_size",
                                   (task,)).fetchone()
                conn.execute("DELETE FROM log_chunks WHERE task = %s", (task,))
        if row is None:
            return 0
        sizes = [int(size) for size in row]
        report.log_files += sum(1 for size in sizes if size)  # a stream with bytes: a file
        report.log_bytes += sum(sizes)
        return sum(sizes)

    def remove_blob(self, sha: str, report: Report, *, dry_run: bool, now: float) -> int:
        size = self._drop_blob(sha, dry_run=dry_run, now=now, missing=report)
        if size is not None:
            report.blobs += 1
            report.blob_bytes += size
        return size or 0

    def _drop_blob(self, sha: str, *, dry_run: bool, now: float,
                   missing: Report | None = None) -> int | None:
        """The blob's size when it was (or would be) deleted; None when it is kept or gone."""
        conn = self._conn
        row = conn.execute("SELECT size, stored_at FROM blobs WHERE sha256 = %s",
                           (sha,)).fetchone()
        if row is None:
            if missing is not None:
                missing.missing += 1
            return None
        if now - float(row[1]) < BLOB_GRACE:
            return None  # an upload may be about to refer to it: a later pass takes it
        if dry_run:
            return int(row[0])
        with conn.transaction():
            gone = conn.execute(
                "DELETE FROM blobs WHERE sha256 = %s AND stored_at <= %s"
                " RETURNING blob_id, size", (sha, now - BLOB_GRACE)).fetchone()
            if gone is None:
                return None  # touched (or deleted) meanwhile
            conn.execute("DELETE FROM blob_chunks WHERE blob_id = %s", (gone[0],))
        return int(gone[1])

    def orphans(self, call: DbCall, report: Report, *, now: float) -> int:
        """Delete blobs no record refers to, older than the grace."""
        freed = 0
        after = ""
        while True:
            names = [str(r[0]) for r in self._conn.execute(
                "SELECT sha256 FROM blobs WHERE stored_at < %s AND sha256 > %s"
                " ORDER BY sha256 LIMIT %s", (now - BLOB_GRACE, after, ORPHAN_BATCH))]
            if not names:
                return freed
            after = names[-1]
            used = call(_referenced, names)
            for sha in names:
                if sha in used:
                    continue
                size = self._drop_blob(sha, dry_run=report.dry_run, now=now)
                if size is not None:
                    report.orphan_files += 1
                    report.orphan_bytes += size
                    freed += size
