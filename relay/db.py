"""The relay's database: SQLite (the default) or PostgreSQL, one serialized executor.

All database work runs on one dedicated thread that owns the connection, so
async handlers never share a connection across threads and every state
change is its own short write transaction (``transaction``): ``BEGIN IMMEDIATE``
in SQLite, ``BEGIN`` plus one advisory lock in PostgreSQL (relay/pg.py). SQLite
runs in WAL mode with ``synchronous=FULL``, so a committed transaction survives
``kill -9`` (and power loss), which is what "acknowledged ⇒ durable" needs;
PostgreSQL gives the same at its default ``synchronous_commit``.

``RelayConfig.database`` picks the engine: empty, ``relay.db`` in the data dir; a
``postgresql://`` URL, that database (migrated by relay/pg_migrate.py). The modules'
SQL is one text for both (docs/storage.md); what truly differs lives here as a
small function (``sequence_head``, ``relaxed_durability``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeAlias, TypeVar

if TYPE_CHECKING:
    from dragoon.relay.config import RelayConfig
    from dragoon.relay.pg import PgConnection

P = ParamSpec("P")
T = TypeVar("T")

#: What the modules are handed: a ``sqlite3.Connection`` or a ``PgConnection``.
Connection: TypeAlias = "sqlite3.Connection | PgConnection"
#: A result row of either engine (``row[0]``, ``row["col"]``, ``row.keys()``, ``dict(row)``).
Row: TypeAlias = Any


def _driver_errors(name: str) -> tuple[type[Exception], ...]:
    """sqlite3's class ``name`` and psycopg's, when psycopg (the ``postgresql`` extra) is in."""
    found: list[type[Exception]] = [getattr(sqlite3, name)]
    try:
        import psycopg
    except ImportError:
        pass
    else:
        found.append(getattr(psycopg, name))
    return tuple(found)


#: Catch these, not ``sqlite3.IntegrityError``: a constraint refused the write, either engine.
IntegrityError: Final = _driver_errors("IntegrityError")
#: The database could not do the work (out of disk or descriptors, server gone).
OperationalError: Final = _driver_errors("OperationalError")

# Each entry migrates from version i to i + 1; never edit one that has shipped.
MIGRATIONS: Final[list[str]] = [
    """
    CREATE TABLE pilots (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        totp_secret TEXT NOT NULL,
        last_totp_step INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE login_failures (pilot TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX login_failures_pilot ON login_failures (pilot, at);
    CREATE TABLE challenges (
        challenge TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, expires_at REAL NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        pilot TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE nonces (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL);
    CREATE TABLE enrollments (
        secret_hash TEXT PRIMARY KEY,
        drone TEXT NOT NULL,
        labels TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE drones (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '[]',
        slots INTEGER NOT NULL DEFAULT 1,
        hostname TEXT,
        version TEXT,
        state TEXT NOT NULL DEFAULT 'pending',
        draining INTEGER NOT NULL DEFAULT 0,
        seq INTEGER NOT NULL DEFAULT 0,
        enrolled_at REAL NOT NULL,
        last_seen REAL,
        metrics TEXT
    );
    CREATE TABLE tasks (
        num INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        name TEXT,
        state TEXT NOT NULL,
        drone TEXT,
        target TEXT NOT NULL,
        spec TEXT NOT NULL,
        pilot TEXT NOT NULL,
        created_at REAL NOT NULL,
        dispatched_at REAL,
        started_at REAL,
        finished_at REAL,
        expires_at REAL NOT NULL,
        lost_after REAL NOT NULL,
        exit_code INTEGER,
        signal INTEGER,
        cpu_seconds REAL,
        peak_rss INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        cancel_grace REAL,
        cancel_delivered INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        output_truncated INTEGER NOT NULL DEFAULT 0,
        seq INTEGER,
        pid INTEGER
    );
    CREATE INDEX tasks_state ON tasks (state, num);
    CREATE INDEX tasks_drone ON tasks (drone, state);
    CREATE TABLE artifacts (
        task TEXT NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        uploaded_at REAL NOT NULL,
        PRIMARY KEY (task, path)
    );
    CREATE TABLE fetches (
        id TEXT PRIMARY KEY,
        drone TEXT NOT NULL,
        path TEXT NOT NULL,
        pilot TEXT NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        size INTEGER,
        sha256 TEXT,
        delivered INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task TEXT NOT NULL,
        drone TEXT NOT NULL,
        idx INTEGER NOT NULL,
        text TEXT NOT NULL,
        created_at REAL NOT NULL,
        acked INTEGER NOT NULL DEFAULT 0,
        UNIQUE (task, idx)
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        detail TEXT
    );
    """,
    # 2: retention and disk quotas (relay/retention.py, relay/quota.py). A pruned task keeps
    # its row (a tombstone: state, times, exit code) and loses its output. log_sizes is the
    # length of each log the relay has acknowledged, storage the bytes each drone holds
    # (logs + artifacts + fetched files), both kept by the same code that appends or records.
    # Artifacts and fetched files are counted here; the logs of an older relay are counted
    # from the disk once, after start-up (the 'logs_backfill_pending' flag; a relay without
    # tasks yet has none to count).
    """
    ALTER TABLE tasks ADD COLUMN pruned_at REAL;
    CREATE INDEX tasks_unpruned ON tasks (finished_at) WHERE pruned_at IS NULL;
    CREATE INDEX artifacts_sha256 ON artifacts (sha256);
    CREATE INDEX fetches_sha256 ON fetches (sha256);
    CREATE INDEX fetches_created ON fetches (created_at);
    CREATE TABLE log_sizes (
        task TEXT NOT NULL,
        stream TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (task, stream)
    );
    CREATE TABLE storage (drone TEXT PRIMARY KEY, bytes INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO storage (drone, bytes)
        SELECT drone, SUM(size) FROM (
            SELECT t.drone AS drone, a.size AS size FROM artifacts a JOIN tasks t ON t.id = a.task
            WHERE t.drone IS NOT NULL
            UNION ALL
            SELECT drone, size FROM fetches WHERE state = 'ready' AND size IS NOT NULL
        ) GROUP BY drone;
    INSERT INTO counters (name, value) VALUES ('reclaimed_bytes', 0);
    INSERT INTO counters (name, value)
        SELECT 'logs_backfill_pending', 1 WHERE EXISTS (SELECT 1 FROM tasks);
    """,
    # 3: re-enrollment (docs/security.md): the keys of replaced drones, so their requests are
    # answered ``drone_replaced`` rather than ``unknown_key``; and whether a join token may
    # replace a drone that holds its name.
    """
    CREATE TABLE retired_keys (
        fingerprint TEXT PRIMARY KEY,
        drone TEXT NOT NULL,
        public_key TEXT NOT NULL,
        retired_at REAL NOT NULL,
        replaced_by TEXT NOT NULL
    );
    ALTER TABLE enrollments ADD COLUMN may_replace INTEGER NOT NULL DEFAULT 0
    """,
    # 4: durable server-sent events (relay/events.py, docs/api.md): every event is a row
    # before a stream sees it, so ids go on across restarts and a reconnecting cockpit
    # resumes exactly; AUTOINCREMENT never hands an id out twice, even once all are pruned.
    # The epoch (a random number, shown in hex) names this history: ids from another data
    # dir, or from before a restore, are answered with a ``reset``.
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX events_at ON events (at);
    INSERT INTO counters (name, value) VALUES ('events_epoch', abs(random() % 1099511627776))
    """,
    # 5: a task's notes (docs/api.md): what the drone says about a task without failing it,
    # such as an artifact pattern that matched nothing; a JSON list of lines, NULL for none.
    """
    ALTER TABLE tasks ADD COLUMN notes TEXT
    """,
    # 6: a start deadline (docs/api.md, "start_within"): a queued task not handed to a drone
    # by ``start_by`` is cancelled by the sweeper, whoever is watching. Relay-side, not in the
    # signed spec: it is about the queue, and the drone never sees it.
    """
    ALTER TABLE tasks ADD COLUMN start_by REAL;
    CREATE INDEX tasks_start_by ON tasks (start_by) WHERE start_by IS NOT NULL
    """,
    # 7: the replay floor (relay/replay.py, docs/security.md): nonces live in memory, and the
    # relay refuses requests signed below a durable mark it keeps a few seconds ahead of its
    # clock; only nonces signed past the mark still go to ``nonces``. The nonces an older
    # relay stored there are loaded at the first start, so the upgrade opens no window.
    """
    INSERT INTO counters (name, value) VALUES ('replay_floor', 0)
    """,
    # 8: trust roots (issue 13, docs/security.md): what a drone sent at init for the pilots to
    # check without trusting the relay: its X25519 key, its signing key's certificate of it,
    # the enrollment binding (an HMAC the relay can't make), and which token it spent (the
    # SHA-256 of its secret, so that a pilot knows which enrollment a binding answers).
    """
    ALTER TABLE drones ADD COLUMN x25519_public_key TEXT;
    ALTER TABLE drones ADD COLUMN x25519_signature TEXT;
    ALTER TABLE drones ADD COLUMN binding TEXT;
    ALTER TABLE drones ADD COLUMN enrolled_with TEXT
    """,
    # 9: pilot-signed orders (issue 13 piece 2, docs/security.md, "Signed orders"): each task
    # keeps the order its pilot signed (canonical JSON, its id apart for the views) and the
    # signature, handed to the drone beside the relay's envelope; so do a cancel and a fetch.
    # Tasks from before have none: a drone refuses them, as it refuses any unsigned task.
    """
    ALTER TABLE tasks ADD COLUMN order_id TEXT;
    ALTER TABLE tasks ADD COLUMN order_text TEXT;
    ALTER TABLE tasks ADD COLUMN order_signature TEXT;
    ALTER TABLE tasks ADD COLUMN cancel_order TEXT;
    ALTER TABLE tasks ADD COLUMN cancel_signature TEXT;
    ALTER TABLE tasks ADD COLUMN cancel_refused TEXT;
    ALTER TABLE fetches ADD COLUMN order_text TEXT;
    ALTER TABLE fetches ADD COLUMN order_signature TEXT
    """,
    # 10: sealed tasks (issue 13 piece 3, docs/security.md, "Sealed tasks"): the spec column
    # holds only its clear part; the whole spec is the payload, sealed under the task key,
    # which ``wraps`` holds wrapped per recipient (JSON: fingerprint -> base64).
    """
    ALTER TABLE tasks ADD COLUMN payload TEXT;
    ALTER TABLE tasks ADD COLUMN wraps TEXT
    """,
    # 11: who to encrypt for (issue 13, docs/protocol.md "Recipients"): each pilot key's
    # certified X25519 key (by the SSH key's fingerprint, so a key listed by a drone is found
    # whoever it logs in as), and each drone's signed list of the pilots it obeys, with the
    # key that signed it (a list of a replaced drone is not served for its successor).
    # The relay only stores and hands these on: the pilots check every signature themselves.
    """
    CREATE TABLE pilot_x25519 (
        fingerprint TEXT PRIMARY KEY,
        x25519_public_key TEXT NOT NULL,
        x25519_signature TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE drone_pilots (
        drone TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        list TEXT NOT NULL,
        signature TEXT NOT NULL,
        version INTEGER NOT NULL,
        received_at REAL NOT NULL
    )
    """,
    # 12: sealed files (issue 13 piece 4, docs/protocol.md, "Sealed files"): an artifact's
    # ``path`` is an opaque name (its index), its sealed metadata (path, size, hash) in
    # ``meta``; a fetch keeps no path, but the sealed payload holding it and the fetch key's
    # wraps, and its file's sealed metadata. A fetch still pending from before names a
    # path in clear under an order no drone takes any more: it fails.
    """
    ALTER TABLE artifacts ADD COLUMN meta TEXT;
    UPDATE fetches SET state = 'failed', error = 'made before sealed fetches (relay upgraded)'
        WHERE state = 'pending';
    ALTER TABLE fetches DROP COLUMN path;
    ALTER TABLE fetches ADD COLUMN payload TEXT;
    ALTER TABLE fetches ADD COLUMN wraps TEXT;
    ALTER TABLE fetches ADD COLUMN meta TEXT
    """,
    # 13: sealed messages (issue 13 piece 4, docs/protocol.md, "Sealed messages"): the
    # relay keeps each inbox message as the drone sealed it under the task key (base64 of
    # one record) and its stored size, never its text. The plaintext messages an older relay
    # kept are deleted with their column: no pilot could tell them from forged ones, and
    # the relay should hold none. The ids go on (AUTOINCREMENT keeps its sequence).
    """
    DELETE FROM messages;
    ALTER TABLE messages DROP COLUMN text;
    ALTER TABLE messages ADD COLUMN sealed TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN size INTEGER NOT NULL DEFAULT 0
    """,
    # 14: jobs (issue 14, docs/jobs.md): a job groups tasks under a client-chosen id; each
    # task of one is a trial's attempt; spares are pilot-signed retry attempts, not tasks
    # yet. The partial indexes keep placement one indexed query per job (relay/dispatch.py).
    """
    CREATE TABLE jobs (
        num INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, name TEXT,
        kind TEXT NOT NULL, pilot TEXT NOT NULL, created_at REAL NOT NULL, finished_at REAL,
        trials INTEGER NOT NULL, max_parallel INTEGER, retries INTEGER NOT NULL DEFAULT 0,
        retry_on TEXT NOT NULL DEFAULT '[]', stop_on_failure INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0, stopped TEXT
    );
    ALTER TABLE tasks ADD COLUMN job_id TEXT;
    ALTER TABLE tasks ADD COLUMN trial INTEGER;
    ALTER TABLE tasks ADD COLUMN attempt INTEGER;
    CREATE UNIQUE INDEX tasks_job_trial ON tasks (job_id, trial, attempt)
        WHERE job_id IS NOT NULL;
    CREATE INDEX tasks_job_state ON tasks (job_id, state, num) WHERE job_id IS NOT NULL;
    CREATE INDEX tasks_queued_nojob ON tasks (num) WHERE state = 'queued' AND job_id IS NULL;
    CREATE TABLE job_spares (
        job_id TEXT NOT NULL, trial INTEGER NOT NULL, attempt INTEGER NOT NULL,
        order_id TEXT NOT NULL, order_text TEXT NOT NULL, order_signature TEXT NOT NULL,
        payload TEXT NOT NULL, PRIMARY KEY (job_id, trial, attempt)
    )
    """,
    # 15: a submit sent again is answered with the task its order made, never queued twice
    # (issue 15: a replica killed after the commit, before the answer): one task per
    # pilot's order id, found by this index (relay/tasks.py, made_by).
    """
    CREATE UNIQUE INDEX tasks_pilot_order ON tasks (pilot, order_id)
        WHERE order_id IS NOT NULL
    """,
]

SCHEMA_VERSION: Final = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer relay; refusing beats corrupting it."""


def is_postgresql(conn: object) -> bool:
    return getattr(conn, "backend", "sqlite") == "postgresql"


def open_connection(config: RelayConfig) -> Connection:
    """The relay's database, migrated: ``config.database`` when set, else the data dir's."""
    return connect_to(config.database, config.db_path)


def connect_to(database: str, path: Path) -> Connection:
    if not database:
        return connect(path)
    from dragoon.relay import pg, pg_migrate

    if not pg.is_postgresql(database):
        raise ValueError(f"database: {pg.masked(database)!r} is not a postgresql:// URL")
    conn = pg.PgConnection.connect(database)
    try:
        pg_migrate.migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating with mode 0600) and migrate the SQLite database."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"relay.db has schema {version}; this relay knows {SCHEMA_VERSION}")
    for number in range(version, SCHEMA_VERSION):
        with transaction(conn):
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


@contextlib.contextmanager
def transaction(conn: Any) -> Iterator[Any]:
    """A write transaction with the write lock taken up front, so no upgrade deadlocks:
    ``BEGIN IMMEDIATE`` in SQLite, ``BEGIN`` + the advisory lock in PostgreSQL."""
    begin = getattr(conn, "begin_write", None)
    if begin is None:
        conn.execute("BEGIN IMMEDIATE")
    else:
        begin()
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def sequence_head(conn: Any, table: str) -> int:
    """The newest id an ``AUTOINCREMENT`` (SQLite) or identity (PostgreSQL) column of
    ``table`` handed out, rows pruned or not; 0 before the first."""
    if is_postgresql(conn):
        with conn.after_writers():  # never an id handed out and not yet committed
            row = conn.execute(
                "SELECT last_value FROM pg_sequences WHERE schemaname = current_schema()"
                " AND sequencename = ?", (f"{table}_id_seq",)).fetchone()
    else:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


@contextlib.contextmanager
def relaxed_durability(conn: Any) -> Iterator[None]:
    """Commits in the block may be lost to a power cut (never corrupt the database): for
    bookkeeping that is rebuilt if lost. SQLite: ``synchronous=NORMAL``; PostgreSQL:
    ``synchronous_commit = off`` for this session."""
    if is_postgresql(conn):
        conn.execute("SET synchronous_commit = off")
        try:
            yield
        finally:
            conn.execute("SET synchronous_commit = on")
        return
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        yield
    finally:
        conn.execute("PRAGMA synchronous=FULL")


_DATA_ERRORS: Final = _driver_errors("DataError")[1:]  # sqlite3's is not raised for these


class Database:
    """One connection on one thread; ``await db.run(fn, …)`` calls ``fn(conn, …)`` there."""

    def __init__(self, path: Path, database: str = "") -> None:
        self.path = path
        self.database = database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-db")
        self._conn: Connection = self._executor.submit(connect_to, database, path).result()

    @classmethod
    def open(cls, config: RelayConfig) -> Database:
        """The relay's database: PostgreSQL when ``config.database`` names one, else SQLite."""
        return cls(config.db_path, config.database)

    @property
    def backend(self) -> str:
        return "postgresql" if self.database else "sqlite"

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, args)

    def submit(self, fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """Queue ``fn(conn, …)`` now, behind every job already queued, without waiting.

        For work whose order matters more than its caller (relay/events.py: an event's
        row goes in right behind the commit it reports); call it on the event loop.
        """
        return asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn, args)

    def call(self, fn: Callable[..., T], *args: object) -> T:
        """The synchronous form, for the admin CLI and start-up code."""
        return self._executor.submit(self._call, fn, args).result()

    def _call(self, fn: Callable[..., T], args: tuple[object, ...]) -> T:
        if getattr(self._conn, "broken", False):
            # PostgreSQL restarted or failed over: the call that met it failed; this one
            # gets a new connection (a failure to connect fails this call, and the next
            # tries again).
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = connect_to(self.database, self.path)
        try:
            return fn(self._conn, *args)
        except (OverflowError, UnicodeEncodeError, *_DATA_ERRORS) as exc:
            # A number that does not fit 64-bit integers, or text that is not Unicode (or, for
            # PostgreSQL, holds a NUL).
            from dragoon.relay.errors import ApiError

            detail = "a number is out of range or a text is not Unicode"
            raise ApiError(422, "invalid", detail) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._executor.submit(self._conn.close).result()
        self._executor.shutdown(wait=True)
