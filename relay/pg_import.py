"""Moving a single relay's state from SQLite and files into PostgreSQL (``relay migrate --from``).

The consistent point is the one ``dragoon relay backup`` takes (relay/backup.py): the
database copied in one read snapshot, each log cut to the length the relay had
acknowledged (its drone sends the rest again when it meets the new relay: a 409
``offset_gap`` names the offset), blobs the copy refers to. That snapshot is unpacked
by ``restore`` (so every member is checked, and the event history forks: cockpits reload
rather than resume from ids of the old history), and then loaded into an empty,
migrated PostgreSQL database in **one transaction**: every table row for row, the
identity sequences set past every id ever handed out (so a pruned event's id is never
given again), the logs and blobs as the PostgreSQL stores keep them. Either all of it is
there or none of it. The keys and tokens are the rows themselves, so drones and pilots
go on with what they hold; the signing key stays in the data dir, whose relay.toml is
pointed at the database last, once the load committed.

The source is read, never written (but for an older ``relay.db``, first brought to today's
schema as ``relay serve`` would at its start): ``relay.db``, ``logs/`` and ``blobs/`` stay where
they are, so going back is one line of relay.toml (``database = ""``). Run it with the
old relay stopped (drones and pilots retry meanwhile; their tasks run on): whatever the
old relay acknowledges after the snapshot is not in the new one, as after a restore.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dragoon.relay import backup, db, pg_migrate
from dragoon.relay.blobs import SHA256
from dragoon.relay.config import DB_FILE, RelayConfig
from dragoon.relay.db import transaction
from dragoon.relay.output import ORDER_TRUNCATED, STREAMS, TRUNCATED
from dragoon.relay.pg import PgConnection, masked
from dragoon.relay.pg_blobs import CHUNK as BLOB_CHUNK

LOG_CHUNK: Final = 1 << 20  # bytes per log_chunks row written here (any split reads back whole)
FINAL_STATES: Final = ("succeeded", "failed", "timed_out", "cancelled", "lost")
# Tables the PostgreSQL stores own (0002_files.sql): filled from the files, not from relay.db.
FILE_TABLES: Final = frozenset({"log_state", "log_chunks", "blobs", "blob_chunks",
                                "stdin_state", "stdin_chunks", "schema_migrations"})
# Rows nobody needs on the other side: a login challenge lives a minute.
SKIPPED: Final = frozenset({"challenges"})


class MigrateRefused(Exception):
    """A refusal, with the one line to show; nothing was written to the database."""


@dataclass
class ImportSummary:
    tables: dict[str, int]
    logs: int = 0
    log_bytes: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    missing: list[str] | None = None
    upgraded: tuple[int, int] | None = None  # relay.db's schema (before, after) if it moved


def _upgrade_sqlite(config: RelayConfig) -> tuple[int, int] | None:
    """relay.db brought to today's schema first, as ``relay serve`` of this release would at
    its start (the snapshot reads today's tables): its (before, after), or None if current.
    The one write to the source; a relay of this release still serves it."""
    source = sqlite3.connect(f"file:{config.db_path}?mode=ro", uri=True)
    try:
        before = int(source.execute("PRAGMA user_version").fetchone()[0])
    finally:
        source.close()
    if before >= db.SCHEMA_VERSION:
        return None  # current; a newer one is refused by the snapshot's own check
    db.connect(config.db_path).close()
    return before, db.SCHEMA_VERSION


def import_data_dir(config: RelayConfig, url: str) -> ImportSummary:
    """Load ``config``'s data dir (SQLite + files) into the empty database at ``url``,
    then point its relay.toml at that database."""
    if config.database:
        raise MigrateRefused(f"{config.data_dir} already uses {masked(config.database)}")
    upgraded = _upgrade_sqlite(config)
    with tempfile.TemporaryDirectory(prefix=".dragoon-migrate-", dir=config.data_dir) as work:
        archive = Path(work) / "snapshot.tar"
        snap = backup.backup(config, archive)
        unpacked = Path(work) / "data"
        backup.restore(archive, unpacked)
        archive.unlink()
        conn = PgConnection.connect(url)
        try:
            pg_migrate.migrate(conn)
            _refuse_unless_empty(conn, url)
            summary = _load(conn, unpacked)
        finally:
            conn.close()
    summary.missing = snap.missing
    summary.upgraded = upgraded
    config.database = url
    config.save()
    return summary


def _refuse_unless_empty(conn: PgConnection, url: str) -> None:
    for table in ("pilots", "drones", "tasks", "events"):
        if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():  # noqa: S608
            raise MigrateRefused(f"{masked(url)} already holds a relay's data ({table}): "
                               "migrate into an empty database")


def _load(conn: PgConnection, data: Path) -> ImportSummary:
    source = sqlite3.connect(f"file:{data / DB_FILE}?mode=ro", uri=True)
    try:
        with transaction(conn):
            summary = ImportSummary(tables=_copy_tables(source, conn))
            _set_sequences(source, conn)
            final = {r[0] for r in source.execute(
                f"SELECT id FROM tasks WHERE state IN {FINAL_STATES}")}  # noqa: S608
            _copy_logs(conn, data / "logs", final, summary)
            _copy_blobs(conn, data / "blobs", summary)
    finally:
        source.close()
    return summary


def _pg_columns(conn: PgConnection) -> dict[str, dict[str, bool]]:
    """Each table's columns, and whether each is an identity the database always makes."""
    out: dict[str, dict[str, bool]] = {}
    for row in conn.execute(
            "SELECT table_name, column_name, is_identity, identity_generation"
            " FROM information_schema.columns WHERE table_schema = current_schema()"):
        out.setdefault(row[0], {})[row[1]] = row[3] == "ALWAYS"
    return out


def _copy_tables(source: sqlite3.Connection, conn: PgConnection) -> dict[str, int]:
    target = _pg_columns(conn)
    copied: dict[str, int] = {}
    names = [r[0] for r in source.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name")]
    for table in names:
        if table in SKIPPED:
            continue
        if table not in target:
            raise MigrateRefused(f"relay.db has a table {table!r} that PostgreSQL has no "
                               "place for: is this relay older than the data dir?")
        columns = [r[1] for r in source.execute(f'PRAGMA table_info("{table}")')]
        lost = [c for c in columns if c not in target[table]]
        if lost:
            raise MigrateRefused(f"relay.db's {table} has columns PostgreSQL lacks: {lost}")
        writable = [c for c in columns if not target[table][c]]
        quoted = ", ".join(f'"{c}"' for c in writable)
        # What the schema seeded (counters, the epoch) gives way to the source's own rows.
        conn.execute(f'DELETE FROM "{table}"')  # noqa: S608
        count = 0
        rows = source.execute(f'SELECT {quoted} FROM "{table}"')  # noqa: S608
        with conn.raw.cursor().copy(f'COPY "{table}" ({quoted}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        copied[table] = count
    return copied


def _set_sequences(source: sqlite3.Connection, conn: PgConnection) -> None:
    """Every identity column goes on after the highest id SQLite ever handed out (its
    ``sqlite_sequence``, which outlives pruned rows), not after the highest id kept."""
    handed = dict(source.execute("SELECT name, seq FROM sqlite_sequence").fetchall()) \
        if source.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"
                          ).fetchone() else {}
    for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND is_identity = 'YES'").fetchall():
        top = conn.execute(f'SELECT MAX("{column}") FROM "{table}"').fetchone()[0]  # noqa: S608
        high = max(int(top or 0), int(handed.get(table) or 0))
        if high > 0:
            conn.execute("SELECT setval(pg_get_serial_sequence(?, ?), ?)",
                         (f'"{table}"', column, high))


def _task_dirs(logs: Path) -> Iterator[Path]:
    if logs.is_dir():
        yield from sorted(p for p in logs.iterdir() if p.is_dir())


def _copy_logs(conn: PgConnection, logs: Path, final: set[str],
               summary: ImportSummary) -> None:
    for task_dir in _task_dirs(logs):
        task = task_dir.name
        sizes: dict[str, int] = {}
        for stream in STREAMS:
            path = task_dir / stream
            if not path.is_file():
                continue
            offset = 0
            with path.open("rb") as handle:
                while chunk := handle.read(LOG_CHUNK):
                    conn.execute('INSERT INTO log_chunks (task, stream, "offset", data)'
                                 " VALUES (?, ?, ?, ?)", (task, stream, offset, chunk))
                    offset += len(chunk)
            sizes[stream] = offset
            summary.log_bytes += offset
        conn.raw.execute(  # the raw driver: these columns are BOOLEAN (0002_files.sql)
            "INSERT INTO log_state (task, stdout_size, stderr_size, order_size, truncated,"
            " order_truncated, closed) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (task, sizes.get("stdout", 0), sizes.get("stderr", 0), sizes.get("order", 0),
             (task_dir / TRUNCATED).exists(), (task_dir / ORDER_TRUNCATED).exists(),
             task in final))
        summary.logs += 1


def _copy_blobs(conn: PgConnection, blobs: Path, summary: ImportSummary) -> None:
    if not blobs.is_dir():
        return
    for path in sorted(blobs.glob("??/*")):
        if not SHA256.fullmatch(path.name) or not path.is_file():
            continue
        blob_id = conn.execute("SELECT nextval('blob_ids')").fetchone()[0]
        size = 0
        with path.open("rb") as handle:
            index = 0
            while chunk := handle.read(BLOB_CHUNK):
                conn.execute("INSERT INTO blob_chunks (blob_id, idx, data) VALUES (?, ?, ?)",
                             (blob_id, index, chunk))
                size += len(chunk)
                index += 1
        conn.execute("INSERT INTO blobs (sha256, blob_id, size, chunk_size, stored_at)"
                     " VALUES (?, ?, ?, ?, ?)",
                     (path.name, blob_id, size, BLOB_CHUNK, path.stat().st_mtime))
        summary.blobs += 1
        summary.blob_bytes += size


def describe(summary: ImportSummary) -> list[str]:
    rows = sum(summary.tables.values())
    lines = []
    if summary.upgraded is not None:
        lines.append("relay.db: schema {} -> {} first (as `relay migrate --data` does)".format(
            *summary.upgraded))
    lines.append(f"{rows} rows in {len(summary.tables)} tables, {summary.logs} task logs "
                 f"({summary.log_bytes} bytes), {summary.blobs} blobs "
                 f"({summary.blob_bytes} bytes)")
    lines += [f"missing (gone while the snapshot was taken): {name}"
              for name in summary.missing or []]
    return lines
