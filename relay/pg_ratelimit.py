"""The open routes' rate limits shared by every replica: token buckets in the database.

relay/ratelimit.py keeps its buckets in memory, which is right for one relay: it is the
only process that answers. Replicas behind a balancer would each give a client the whole
budget, so N replicas would let N times the limit through (a flood spread over them
round robin). On PostgreSQL the buckets are rows (``rate_buckets``, migration 0003) and
one statement, ``SELECT rate_check(...)``, takes the client's token and then the total's
under row locks, on the database's clock, so every replica draws on the same buckets.

The in-memory limiter still answers first: it only ever refuses what the shared buckets
would refuse too (this replica's requests are a part of all of them), so a flood past a
replica's own budget costs that replica no round trip. The shared check runs on a
connection of its own, on the event loop (psycopg's async connection), one statement at
a time. When the database does not answer, the request goes on unlimited by it (the
route it reaches needs the database anyway and answers for itself) and the next check
dials again. Buckets full again are deleted once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from dragoon.relay.pg_dial import RedialingConnection

log = logging.getLogger(__name__)

CHECK = "SELECT rate_check(%s, %s, %s, %s, %s, %s)"
PRUNE = "DELETE FROM rate_buckets WHERE full_at < extract(epoch FROM clock_timestamp())"
PRUNE_EVERY: Final = 60.0


class SharedBuckets:
    """``check(route, peer)``: 0.0 to let the request through, else the seconds to wait."""

    def __init__(self, url: str, *, per_peer_rate: float, per_peer_burst: int,
                 total_rate: float, total_burst: int) -> None:
        self.url = url
        self._peer = (float(per_peer_rate), float(per_peer_burst))
        self._total = (float(total_rate), float(total_burst))
        self._conn = RedialingConnection(url, "dragoon-relay-ratelimit")
        self._lock: asyncio.Lock | None = None
        self._pruned = 0.0

    async def check(self, route: str, peer: str) -> float:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                conn = await self._conn.get()
                cursor = await conn.execute(CHECK, (f"{route} {peer}", *self._peer,
                                                    f"{route} *", *self._total))
                row = await cursor.fetchone()
                if time.monotonic() - self._pruned > PRUNE_EVERY:
                    self._pruned = time.monotonic()
                    await conn.execute(PRUNE)
            except Exception as exc:
                log.warning("rate limits: the shared buckets did not answer: %s", exc)
                await self._conn.drop()
                return 0.0
        return float(row[0]) if row is not None else 0.0

    async def close(self) -> None:
        await self._conn.drop()
