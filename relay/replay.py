"""Replay memory: RE-V1's one-shot nonces in memory, made safe across restarts by a floor.

PROTOCOL.md check 5 wants a nonce seen once in five minutes, and of two
concurrent requests with one nonce exactly one passes. Recording every nonce
in SQLite did that at the cost of one fsync per request. Here the nonces live
in memory (``MemoryNonces``), and what a restart forgets is covered by the
*replay floor* (docs/security.md, "Replay protection"):

- the relay keeps a durable *mark* ahead of its clock (``replay_floor`` in the
  ``counters`` table), raised ``LEASE`` seconds at a time, never lowered. A nonce
  is held only in memory when its timestamp is below the durable mark; a nonce
  signed at or past the mark (a client whose clock runs ahead) is written to the
  ``nonces`` table, and the mark raised, in one group commit before its request
  goes on;
- at start the relay's floor is the stored mark: it refuses every timestamp
  below it (``stale_timestamp`` with ``not_before``), loads the stored nonces,
  and takes a new lease. Every nonce the previous run accepted is thus either
  below the floor or loaded again, whatever the clock did meanwhile: a clock
  stepped back finds the floor where the last run left its mark.

The floor is the mark and not the start time: requests signed in the second
before a start, or by a client whose clock lags, could not have been accepted
by the previous run past its mark, and refusing them would fail every
third-party client (a curl session) at every start. After a restart quicker
than the lease the floor is at most ``LEASE`` seconds past the crash.

Under steady traffic that is one small commit per ``LEASE / 2`` seconds, none on
the way of a request whose client's clock is in sync.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol

from dragoon.relay.db import Connection, Database, transaction
from dragoon.shared import constants as c

log = logging.getLogger(__name__)

FLOOR_COUNTER: Final = "replay_floor"
# How far ahead of the clock the durable mark is raised. After a quick restart the floor
# is at most this far past the crash, which clients bridge by signing at the floor.
LEASE: Final = 5


class NonceStore(Protocol):
    """Where one-shot nonces are held: in this process, or shared by several relays.

    ``claim`` is the whole check-and-record: of any number of concurrent claims
    of one unexpired nonce exactly one answers True.
    """

    async def claim(self, nonce: str, expires_at: float, now: float) -> bool: ...


class MemoryNonces:
    """A dict of nonce → expiry, pruned in order of arrival, touched on the event loop only.

    ``claim_now`` has no ``await``: on the one event loop it is atomic. Memory is
    bounded by the traffic of one TTL: entries go as they expire, a few per claim.
    """

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._expiry)

    def claim_now(self, nonce: str, expires_at: float, now: float) -> bool:
        self.prune(now)
        held = self._expiry.get(nonce)
        if held is not None and held > now:
            return False
        self._expiry[nonce] = expires_at
        self._order.append((expires_at, nonce))
        return True

    async def claim(self, nonce: str, expires_at: float, now: float) -> bool:
        return self.claim_now(nonce, expires_at, now)

    def prune(self, now: float) -> None:
        order = self._order
        while order and order[0][0] <= now:
            expires_at, nonce = order.popleft()
            # A nonce claimed again after it expired has a newer entry further on.
            if self._expiry.get(nonce) == expires_at:
                del self._expiry[nonce]


@dataclass(frozen=True)
class Start:
    """What the relay's start left on disk: this run's floor, its first mark, stored nonces."""

    floor: int
    mark: int
    nonces: list[tuple[str, float]]


def start(conn: Connection, now: float) -> Start:
    """The floor is the stored mark; take a new lease (never lowering it), load the nonces."""
    with transaction(conn):
        row = conn.execute("SELECT value FROM counters WHERE name = ?",
                           (FLOOR_COUNTER,)).fetchone()
        floor = int(row["value"]) if row is not None else 0
        mark = max(floor, math.ceil(now) + LEASE)
        _store_mark(conn, mark)
    nonces = conn.execute("SELECT nonce, expires_at FROM nonces WHERE expires_at > ?",
                          (now,)).fetchall()
    return Start(floor, mark, [(r["nonce"], float(r["expires_at"])) for r in nonces])


def _store_mark(conn: Connection, mark: int) -> None:
    conn.execute(
        "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE"
        " SET value = CASE WHEN excluded.value > counters.value THEN excluded.value"
        " ELSE counters.value END", (FLOOR_COUNTER, mark),
    )


def _commit(conn: Connection, batch: list[tuple[str, int, float]], now: float) -> int:
    """One transaction: the mark raised a lease past ``now``, then the nonces it does not cover."""
    mark = math.ceil(now) + LEASE
    with transaction(conn):
        _store_mark(conn, mark)
        mark = int(conn.execute("SELECT value FROM counters WHERE name = ?",
                                (FLOOR_COUNTER,)).fetchone()["value"])
        conn.executemany(
            "INSERT INTO nonces (nonce, expires_at) VALUES (?, ?)"
            " ON CONFLICT (nonce) DO UPDATE SET expires_at = excluded.expires_at",
            [(nonce, expires_at) for nonce, ts, expires_at in batch if ts >= mark],
        )
    return mark


class ReplayGuard:
    """This run's floor and nonce memory; ``admit`` is check 5 of every signed request.

    Touched on the event loop only. Durable writes are group commits: requests
    that need one while another is being written share the next.
    """

    def __init__(self, db: Database, *, nonce_ttl: float,
                 store: NonceStore | None = None) -> None:
        self.db = db
        self.nonce_ttl = nonce_ttl
        self.store: NonceStore = store or MemoryNonces()
        if getattr(self.store, "durable", False):
            # Every nonce is committed before its request goes on (relay/pg_nonces.py) and
            # kept until no clock could accept its timestamp again: nothing is forgotten
            # at a restart, so there is no floor to keep, and no replica refuses what
            # another's lease ran ahead of.
            self.floor, self.mark = 0, math.inf
            self._pending: list[tuple[str, int, float]] = []
            self._next: asyncio.Future[None] | None = None
            self._writer: asyncio.Task[None] | None = None
            return
        began = db.call(start, time.time())
        self.floor = began.floor
        self.mark = began.mark
        if isinstance(self.store, MemoryNonces):  # a shared store holds its own
            now = time.time()
            for nonce, expires_at in began.nonces:
                self.store.claim_now(nonce, expires_at, now)
        ahead = self.floor - time.time()
        if ahead > c.MAX_CLOCK_SKEW_SECONDS:
            log.warning(
                "the replay floor is %d s ahead of this clock (it went backwards since the "
                "relay last ran): signed requests are refused until the clock is within %d s "
                "of it (docs/operations.md)", int(ahead), c.MAX_CLOCK_SKEW_SECONDS,
            )
        self._pending: list[tuple[str, int, float]] = []
        self._next: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    def expiry(self, timestamp: int, now: float) -> float:
        """A TTL, and never less than the timestamp stays acceptable: forgetting it is safe."""
        return max(now + self.nonce_ttl, timestamp + c.MAX_CLOCK_SKEW_SECONDS + 1)

    async def admit(self, nonce: str, timestamp: int, now: float) -> bool:
        """Record ``nonce``; False when it was seen. Returns once the record would survive a crash.

        The caller has already refused a timestamp below ``floor``.
        """
        expires_at = self.expiry(timestamp, now)
        if not await self.store.claim(nonce, expires_at, now):
            return False
        if timestamp < self.mark:
            if self.mark - now < LEASE / 2 and self._writer is None:
                self._join(None)  # renew ahead, so that synced clients never wait on it
            return True
        await asyncio.shield(self._join((nonce, timestamp, expires_at)))
        return True

    def _join(self, entry: tuple[str, int, float] | None) -> asyncio.Future[None]:
        if entry is not None:
            self._pending.append(entry)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            # A renewal nobody awaits must not warn that its error went unread.
            self._next.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return self._next

    async def _write(self) -> None:
        done: asyncio.Future[None] | None = None
        try:
            while self._next is not None:
                batch, done = self._pending, self._next
                self._pending, self._next = [], None
                try:
                    mark = await self.db.run(_commit, batch, time.time())
                except Exception as exc:  # the waiting requests answer 503; memory keeps them
                    log.exception("replay floor: could not store %d nonces", len(batch))
                    done.set_exception(exc)
                    continue
                self.mark = max(self.mark, mark)
                done.set_result(None)
        finally:
            self._writer = None
            for left in (done, self._next):
                if left is not None and not left.done():
                    left.set_exception(RuntimeError("the relay is stopping"))
