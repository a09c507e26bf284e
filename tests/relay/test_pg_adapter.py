"""relay/pg.py and relay/pg_migrate.py against the real PostgreSQL server.

The adapter is what lets every relay module keep one SQL: ``?`` placeholders, rows
like ``sqlite3.Row``, integrity errors caught as ``db.IntegrityError``, and write
transactions that serialise across connections (replicas) under one advisory lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from dragoon.relay import db, pg, pg_migrate

from tests.support.pg import drop_database, new_database


@pytest.fixture
def url() -> Iterator[str]:
    database = new_database()
    yield database
    drop_database(database)


@pytest.fixture
def conn(url: str) -> Iterator[pg.PgConnection]:
    connection = db.connect_to(url, None)  # type: ignore[arg-type]
    assert isinstance(connection, pg.PgConnection)
    yield connection
    connection.close()


@pytest.mark.parametrize(("sql", "want"), [
    ("SELECT ?", "SELECT %s"),
    ("SELECT * FROM t WHERE a = ? AND b IN (?, ?)",
     "SELECT * FROM t WHERE a = %s AND b IN (%s, %s)"),
    ("SELECT '?' , ?", "SELECT '?' , %s"),
    ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
    ('SELECT "odd?name" FROM t WHERE x = ?', 'SELECT "odd?name" FROM t WHERE x = %s'),
    ("SELECT 1 -- why? \n, ?", "SELECT 1 -- why? \n, %s"),
    ("SELECT /* a ? b */ ?", "SELECT /* a ? b */ %s"),
    ("SELECT $$ ? $$, ?", "SELECT $$ ? $$, %s"),
    ("SELECT 5 % 3, '100%', ?", "SELECT 5 %% 3, '100%%', %s"),
])
def test_translate_placeholders_outside_literals(sql: str, want: str) -> None:
    assert pg.translate(sql) == want


def test_named_parameters_as_sqlite_takes_them(conn: pg.PgConnection) -> None:
    assert pg.translate("SELECT :a, ':b', x::text", True) == "SELECT %(a)s, ':b', x::text"
    assert pg.translate("SELECT :a", False) == "SELECT :a"  # positional: left alone
    row = conn.execute("SELECT :a AS a, ':b' AS b, :a + 1 AS c", {"a": 41}).fetchone()
    assert tuple(row) == (41, ":b", 42)


def test_literals_and_percent_reach_the_server_unchanged(conn: pg.PgConnection) -> None:
    row = conn.execute("SELECT '?' AS q, 'a%b' AS pct, 7 % 4 AS mod, ? AS p", ("x",)).fetchone()
    assert tuple(row) == ("?", "a%b", 3, "x")


def test_rows_answer_like_sqlite_rows(conn: pg.PgConnection) -> None:
    row = conn.execute("SELECT 1 AS a, 'two' AS b, 3 AS a").fetchone()
    assert row[0] == 1 and row[1] == "two"
    assert row["a"] == 1 and row["b"] == "two"  # a name given twice: the first
    assert row.keys() == ["a", "b"]
    assert dict(conn.execute("SELECT 1 AS x, 2 AS y").fetchone()) == {"x": 1, "y": 2}
    with pytest.raises(IndexError):
        row["missing"]
    assert [tuple(r) for r in conn.execute("SELECT generate_series(1, 3)")] == [(1,), (2,), (3,)]


def test_bools_go_in_as_integers_and_sums_come_back_as_ints(conn: pg.PgConnection) -> None:
    with db.transaction(conn):
        conn.execute("INSERT INTO storage (drone, bytes) VALUES (?, ?)", ("a", True))
        conn.execute("INSERT INTO storage (drone, bytes) VALUES (?, ?)", ("b", 41))
    total = conn.execute("SELECT SUM(bytes) FROM storage").fetchone()[0]
    assert total == 42 and type(total) is int
    half = conn.execute("SELECT SUM(bytes) / 4.0 FROM storage").fetchone()[0]
    assert half == 10.5 and isinstance(half, float)


def test_ints_beyond_64_bits_are_refused_as_sqlite_refuses_them(conn: pg.PgConnection) -> None:
    assert conn.execute("SELECT ?", (2**63 - 1,)).fetchone()[0] == 2**63 - 1
    with pytest.raises(OverflowError):
        conn.execute("SELECT * FROM audit WHERE id < ?", (2**64,))


def test_integrity_error_is_caught_as_the_shared_tuple(conn: pg.PgConnection) -> None:
    conn.execute("INSERT INTO counters (name, value) VALUES (?, ?)", ("x", 1))
    with pytest.raises(db.IntegrityError):
        conn.execute("INSERT INTO counters (name, value) VALUES (?, ?)", ("x", 2))
    # Autocommit: the failed statement left nothing open, the next one works.
    assert conn.execute("SELECT value FROM counters WHERE name = ?", ("x",)).fetchone()[0] == 1


def test_a_failed_transaction_rolls_back_whole(conn: pg.PgConnection) -> None:
    with pytest.raises(db.IntegrityError), db.transaction(conn):
        conn.execute("INSERT INTO counters (name, value) VALUES (?, ?)", ("y", 1))
        conn.execute("INSERT INTO counters (name, value) VALUES (?, ?)", ("y", 2))
    assert conn.execute("SELECT COUNT(*) FROM counters WHERE name = 'y'").fetchone()[0] == 0


def test_write_transactions_serialise_across_connections(url: str) -> None:
    """The advisory lock: a second writer waits for the first's commit, as BEGIN IMMEDIATE."""
    first, second = pg.PgConnection.connect(url), pg.PgConnection.connect(url)
    try:
        order: list[str] = []
        entered = threading.Event()

        def other() -> None:
            entered.set()
            with db.transaction(second):
                order.append("second")

        with db.transaction(first):
            thread = threading.Thread(target=other)
            thread.start()
            assert entered.wait(5)
            # The second writer is blocked on the lock: it shows as waiting in pg_locks.
            deadline = time.monotonic() + 5
            while not first.execute(
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone():
                assert time.monotonic() < deadline, "the second writer never waited"
            order.append("first")
        thread.join(5)
        assert order == ["first", "second"]
    finally:
        first.close()
        second.close()


def test_migrate_records_versions_and_runs_once(conn: pg.PgConnection, url: str) -> None:
    assert pg_migrate.version(conn) == len(pg_migrate.available())
    assert pg_migrate.migrate(conn) == []  # nothing left
    # Replicas starting at once: each step runs under the lock in a transaction of its
    # own, so the steps may be shared out among them (one applies 1 and 2, another 3 and
    # 4), but every step is applied exactly once, in order, and recorded once.
    fresh = new_database()
    try:
        results: list[list[int]] = []
        errors: list[BaseException] = []

        def start() -> None:
            try:
                c = pg.PgConnection.connect(fresh)
                try:
                    results.append(pg_migrate.migrate(c))
                finally:
                    c.close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert not errors
        assert len(results) == 3
        versions = list(range(1, len(pg_migrate.available()) + 1))
        assert sorted(v for ran in results for v in ran) == versions  # each once, none missed
        assert all(ran == sorted(ran) for ran in results)
        check = pg.PgConnection.connect(fresh)
        try:
            assert [int(r[0]) for r in check.execute(
                "SELECT version FROM schema_migrations ORDER BY version")] == versions
            assert pg_migrate.migrate(check) == []
        finally:
            check.close()
    finally:
        drop_database(fresh)


def test_a_newer_schema_is_refused(conn: pg.PgConnection, url: str) -> None:
    conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                 (999, "future", time.time()))
    with pytest.raises(db.SchemaTooNew):
        db.connect_to(url, None)  # type: ignore[arg-type]


def test_the_pg_schema_has_every_sqlite_column(tmp_path, conn: pg.PgConnection) -> None:
    """0001_schema.sql is SQLite's 14 migrations in PostgreSQL types: same tables, columns."""
    lite = db.connect(tmp_path / "relay.db")
    tables = [r[0] for r in lite.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    for table in tables:
        want = {r[1] for r in lite.execute(f"PRAGMA table_info({table})")}
        have = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", (table,))}
        assert want <= have, (table, want - have)
    lite.close()


def test_a_database_whose_server_dropped_it_connects_again(url: str) -> None:
    """The server ends the relay's connection (a restart, a failover): the call that meets
    it fails, the next one runs on a new connection."""
    database = db.Database(None, url)  # type: ignore[arg-type]
    try:
        pid = database.call(lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0])
        admin = pg.PgConnection.connect(url)
        try:
            admin.execute("SELECT pg_terminate_backend(?)", (pid,))
        finally:
            admin.close()
        with pytest.raises(db.OperationalError):
            database.call(lambda c: c.execute("SELECT 1").fetchone())
        again = database.call(lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0])
        assert again != pid
    finally:
        database.close()


def test_masked_hides_the_password() -> None:
    assert pg.masked("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert pg.masked("postgresql://u@h/db") == "postgresql://u@h/db"


def test_a_sequence_head_waits_for_the_write_in_flight_that_took_its_id(
    url: str, conn: pg.PgConnection,
) -> None:
    """The events sequence moves at nextval, before the row commits: a replica opening a
    stream must not stand at an id that no one can read yet (docs/storage.md)."""
    pg_migrate.migrate(conn)
    writer = pg.PgConnection.connect(url)
    try:
        writer.begin_write()
        writer.execute("INSERT INTO events (kind, data, at) VALUES ('task', '{}', 0)")
        got: list[int] = []
        reader = threading.Thread(target=lambda: got.append(db.sequence_head(conn, "events")))
        reader.start()
        reader.join(0.3)
        assert reader.is_alive() and not got  # behind the writer, not past it
        writer.commit()
        reader.join(10)
        assert got == [1]
        assert conn.execute("SELECT COUNT(*) FROM events WHERE id = 1").fetchone()[0] == 1
    finally:
        writer.close()
