"""One async PostgreSQL connection a relay part keeps for itself, dialled again after a fault.

The shared nonces (relay/pg_nonces.py) and the shared rate limits (relay/pg_ratelimit.py)
each send one statement at a time on the event loop, so a pool would only add waiting:
each keeps one autocommit connection, named for ``pg_stat_activity``. When a statement
fails the caller drops the connection (it may be broken half way through a reply) and
the next statement dials a new one, so a database restart costs the requests in flight,
not the relay's life.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg


class RedialingConnection:
    """``get()`` the live connection (dialling when there is none), ``drop()`` after a fault."""

    def __init__(self, url: str, application_name: str) -> None:
        self.url = url
        self.application_name = application_name
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def get(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, application_name=self.application_name)
        return self._conn

    async def drop(self) -> None:
        """Close it, quietly: it is being dropped because something already went wrong."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None
