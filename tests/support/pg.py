"""PostgreSQL for the tests: the server tests/run.sh found or started, and a database per relay.

``server_url()`` is ``DRAGOON_TEST_PG`` when set (tests/run.sh sets it: the variable the
user gave, else this machine's server on 127.0.0.1:5432 when it answers, else a
throwaway cluster it started), else the local server when it answers. A test that needs
PostgreSQL and finds none **fails** (``require_server``): PostgreSQL tests never skip
silently. ``new_database()`` creates an empty database with a unique name on that
server and returns its URL; ``drop_database(url)`` removes it (closing what is still
connected to it).
"""

from __future__ import annotations

import itertools
import os
import secrets
from urllib.parse import urlsplit, urlunsplit

import pytest

LOCAL = "postgresql://postgres@127.0.0.1:5432/test"
_counter = itertools.count(1)


def server_url() -> str | None:
    """The maintenance URL of the test server, or None when no server answers."""
    url = os.environ.get("DRAGOON_TEST_PG") or LOCAL
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception:
        if os.environ.get("DRAGOON_TEST_PG"):
            raise
        return None
    return url


def require_server() -> str:
    url = server_url()
    if url is None:
        pytest.fail("no PostgreSQL answers: set DRAGOON_TEST_PG or run tests/run.sh, which "
                    "starts one (PostgreSQL tests never skip)")
    return url


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def new_database(prefix: str = "dragoon") -> str:
    """CREATE DATABASE with a unique name; its URL."""
    import psycopg

    server = require_server()
    name = f"{prefix}_{os.getpid()}_{next(_counter)}_{secrets.token_hex(3)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_database(server, name)


def drop_database(url: str) -> None:
    import psycopg

    server = require_server()
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
