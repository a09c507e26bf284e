"""One-shot nonces shared by every replica: the ``nonces`` table, claimed in group commits.

A relay on SQLite holds nonces in memory (relay/replay.py ``MemoryNonces``): it is the
only process that checks them. Several replicas on one PostgreSQL database must agree
that a nonce one of them accepted is refused by all the others (PROTOCOL.md check 5), so
here the claim *is* the row: ``INSERT … ON CONFLICT DO UPDATE … WHERE`` the stored one
has expired ``RETURNING`` the nonces that went in. Of two replicas racing for one nonce
the database lets exactly one row in; the other finds it and is refused.

One round trip per request would queue requests behind each other's commits, so claims
that arrive while a statement is out wait for the next and go in together (one
``unnest`` insert): under load a commit covers many requests, alone it costs one. The
claims travel on a connection of their own, on the event loop (psycopg's async
connection), so they never wait behind the relay's database thread. A claim that fails
(the database is gone) raises: the request answers 503 and the next claim dials again.
"""

from __future__ import annotations

import asyncio
import logging

from dragoon.relay.pg_dial import RedialingConnection

log = logging.getLogger(__name__)

CLAIM = """
INSERT INTO nonces (nonce, expires_at)
SELECT * FROM unnest(%s::text[], %s::double precision[])
ON CONFLICT (nonce) DO UPDATE SET expires_at = excluded.expires_at
    WHERE nonces.expires_at <= %s
RETURNING nonce
"""


class PgNonces:
    """relay/replay.py's ``NonceStore`` on the shared table."""

    durable = True  # a claim is committed before it answers: no replay floor is needed

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = RedialingConnection(url, "dragoon-relay-nonces")
        self._waiting: dict[str, tuple[float, asyncio.Future[bool]]] = {}
        self._duplicates: list[asyncio.Future[bool]] = []
        self._writer: asyncio.Task[None] | None = None
        self._now = 0.0

    async def claim(self, nonce: str, expires_at: float, now: float) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if nonce in self._waiting:  # the same nonce twice in one batch: the second loses
            self._duplicates.append(future)
            future.set_result(False)
        else:
            self._waiting[nonce] = (expires_at, future)
        self._now = max(self._now, now)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                self._duplicates.clear()
                try:
                    conn = await self._conn.get()
                    names = list(batch)
                    cursor = await conn.execute(CLAIM, (names, [batch[n][0] for n in names],
                                                        self._now))
                    won = {row[0] for row in await cursor.fetchall()}
                except Exception as exc:
                    log.warning("nonces: the shared table did not answer: %s", exc)
                    for _, future in batch.values():
                        if not future.done():
                            future.set_exception(exc)
                    await self._conn.drop()
                    continue
                for nonce, (_, future) in batch.items():
                    if not future.done():
                        future.set_result(nonce in won)
        finally:
            self._writer = None

    async def close(self) -> None:
        await self._conn.drop()
