"""PostgreSQL is there for the suite: this test fails, never skips, when it is not.

tests/run.sh provides a server (DRAGOON_TEST_PG, else the local one, else a throwaway
cluster it starts), and every PostgreSQL test relies on it. If none answers, this is the
one failure that says so plainly, rather than every relay test on the postgresql backend
failing at its relay's start. It also proves the two things the per-relay databases
need: CREATE DATABASE on that server, a connection to the new database, and DROP.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg

from tests.support import pg


def test_server_answers_and_databases_come_and_go() -> None:
    server = pg.require_server()  # pytest.fail, not skip, when nothing answers
    url = pg.new_database("dragoon_avail")
    name = urlsplit(url).path.lstrip("/")
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SELECT current_database(), 1 + 1").fetchone()
        assert row == (name, 2)
    finally:
        pg.drop_database(url)
    with psycopg.connect(server, connect_timeout=5, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                            (name,)).fetchone()
    assert left == (0,)
