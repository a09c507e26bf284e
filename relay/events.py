"""Server-sent events: drone, task and message changes, kept so that a cockpit resumes exactly.

Every event is a row of the ``events`` table before any stream sees it, and its
id is the table's: ids only grow, across restarts and ``kill -9``, so a cockpit
or follower that reconnects with ``Last-Event-ID`` gets exactly the events after
the one it saw, none twice. An id on the wire is ``<epoch>-<n>``: the epoch names
one history (one data dir; a restore from a backup starts a new one), so an id
from another history, or older than what is kept (``events_kept``,
``events_max_age``, pruned by the sweeper), is answered with a ``reset`` event
(reload the lists) instead of silently missing what came between.

The order of work: a change commits, the route publishes its event, which
queues the event's row on the database thread right then, behind the commit
(events published meanwhile go into the same transaction; a publish while a
write is queued and not yet started joins that write instead of queueing a
job that would find nothing left: it too runs behind the commit), and only
once the row is durable is the event handed to the streams. A crash in the instant
between a change's commit and its event's row loses that one event: a cockpit
that reconnects after such a crash sees the object again at its next change.
``docs/api.md`` says so.

The store sits behind ``EventStore`` so that another backend (PostgreSQL with
several relay replicas, whose "global event ids" are the same table-backed
sequence) can replace ``SqliteEventStore`` without the routes knowing.

With replicas the streams follow the global head, not only this relay's writes: each
relay announces the newest id it stored (relay/bus.py), and a relay that hears of a
newer one reads the events it has not handed over yet from the table, in id order
(``EventBus.follow``), so every stream on every replica sees each id once, in order,
whichever replica stored it (docs/storage.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from dragoon.relay.db import Connection, Database, sequence_head, transaction

log = logging.getLogger("dragoon.relay")

QUEUE: Final = 1000  # events a stream may fall behind before it is cut off (it resumes by id)
PAGE: Final = 500  # events read from the store at a time when a stream catches up
FOLLOW_END: Final = 2**63 - 1  # "through the end": an id above any a store gives out
EPOCH_COUNTER: Final = "events_epoch"
_ID: Final = re.compile(r"([0-9a-f]{1,16})-([0-9]{1,19})")


def epoch_text(value: int) -> str:
    return f"{value:010x}"


def set_epoch(conn: Connection, value: int) -> None:
    """Start a new event history (a restored backup, a lost event): every older id resets."""
    with transaction(conn):
        conn.execute("UPDATE counters SET value = ? WHERE name = ?", (value, EPOCH_COUNTER))


def fork_history(db_path: Path) -> None:
    """For ``restore``: the restored relay's events go on from the backup, not from where the
    old relay got to, so ids its cockpits hold must not resume here. (A database from
    before migration 4 has no epoch yet; the migration makes a new one.)"""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'counters'").fetchone():
            set_epoch(conn, secrets.randbits(40))
    finally:
        conn.close()


@dataclass(frozen=True)
class BusEvent:
    id: int
    kind: str  # drone | task | message | reset
    payload: str  # the JSON text of the object (for ``reset``: why)
    epoch: str

    @property
    def event_id(self) -> str:
        return f"{self.epoch}-{self.id}"

    def encode(self) -> bytes:
        return f"id: {self.event_id}\nevent: {self.kind}\ndata: {self.payload}\n\n".encode()


@dataclass(frozen=True)
class Window:
    """What a store can replay: every event with ``floor < id <= head``."""

    floor: int  # the newest id no longer kept (0 while nothing was pruned)
    head: int  # the newest id given out (0 before the first event)


@dataclass(frozen=True)
class Opening:
    """How a stream starts: the events in ``start < id <= head`` are replayed from the store,
    then every event stored after ``head`` follows live. ``reset`` (then ``start == head``)
    is sent first when the client's id could not be resumed from."""

    epoch: str
    start: int
    head: int
    reset: BusEvent | None = None

    @property
    def position(self) -> str:
        """The id of the newest event before the stream: where a fresh client stands."""
        return f"{self.epoch}-{self.start}"


class EventStore(Protocol):
    """Where events are kept: the ids are the store's and only grow, whatever restarts.

    A backend with several writers (PostgreSQL replicas) must also make ids visible
    in order (a reader never sees id 11 before 10 is committed), or replay misses.
    """

    epoch: str

    def append(
        self, pending: deque[tuple[str, str, float]]
    ) -> asyncio.Future[list[BusEvent]] | None:
        """Queue, now and in call order, the write of (kind, JSON, at) entries from
        ``pending``: the write takes all it holds when it runs, in one transaction (so what
        was published meanwhile shares it, and a later call may find nothing left), and
        answers the events it stored, ids given. None: a write queued earlier has not
        started yet, so it takes these entries too (it runs behind every commit that
        happened before this call, since it had not started when this call came)."""
        ...

    async def window(self) -> Window: ...

    async def after(self, last: int, through: int, limit: int) -> list[BusEvent]:
        """The events with ``last < id <= through``, oldest first, at most ``limit``."""
        ...

    async def prune(self, *, keep: int, cutoff: float | None) -> int:
        """Drop all but the newest ``keep`` events and those older than ``cutoff``."""
        ...

    async def fork(self) -> None:
        """A new epoch: the history before it cannot be replayed (an event was lost)."""
        ...


class SqliteEventStore:
    """The ``events`` table (SQLite's migration 4, PostgreSQL's 0001) on the relay's one
    database thread, whichever backend it is (the name is from when SQLite was the only one).

    ``AUTOINCREMENT`` (an identity column on PostgreSQL) keeps ids from ever being handed
    out twice, even once every row is pruned; ``db.sequence_head`` reads the newest id
    given out. On PostgreSQL the ids are taken inside the write lock (relay/pg.py), so
    they commit in order whatever the number of relay processes.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.epoch = db.call(_read_epoch)
        # A write is queued on the database thread and has not started: publishing more
        # needs no other job (it would find nothing left, a hop to the thread for nothing).
        self._queued = False

    def append(
        self, pending: deque[tuple[str, str, float]]
    ) -> asyncio.Future[list[BusEvent]] | None:
        if self._queued:
            return None
        self._queued = True  # before the submit: the job may start (and clear it) at once
        try:
            return self.db.submit(self._write, pending)
        except BaseException:
            self._queued = False
            raise

    def _write(self, conn: Connection,
               pending: deque[tuple[str, str, float]]) -> list[BusEvent]:
        # Cleared before the deque is drained: an entry published after this line is
        # either drained below or queues a write of its own.
        self._queued = False
        return _write(conn, pending, self.epoch)

    async def window(self) -> Window:
        return await self.db.run(_window)

    async def after(self, last: int, through: int, limit: int) -> list[BusEvent]:
        rows = await self.db.run(lambda conn: conn.execute(
            "SELECT id, kind, data FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
            (last, through, limit)).fetchall())
        return [BusEvent(r["id"], r["kind"], r["data"], self.epoch) for r in rows]

    async def prune(self, *, keep: int, cutoff: float | None) -> int:
        return await self.db.run(_prune, keep, cutoff)

    async def fork(self) -> None:
        value = secrets.randbits(40)
        self.epoch = epoch_text(value)  # at once, even if the write below fails too
        await self.db.run(set_epoch, value)


def _read_epoch(conn: Connection) -> str:
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (EPOCH_COUNTER,)).fetchone()
    return epoch_text(int(row["value"]))


def _write(conn: Connection, pending: deque[tuple[str, str, float]],
           epoch: str) -> list[BusEvent]:
    """Everything published so far, in one transaction; later jobs find nothing left."""
    batch: list[tuple[str, str, float]] = []
    with contextlib.suppress(IndexError):
        while True:
            batch.append(pending.popleft())
    if not batch:
        return []
    stored = []
    with transaction(conn):
        for kind, payload, at in batch:
            row = conn.execute("INSERT INTO events (kind, data, at) VALUES (?, ?, ?)"
                               " RETURNING id", (kind, payload, at)).fetchall()[0]
            stored.append(BusEvent(int(row[0]), kind, payload, epoch))
    return stored


def _head(conn: Connection) -> int:
    return sequence_head(conn, "events")


def _window(conn: Connection) -> Window:
    head = _head(conn)
    oldest = conn.execute("SELECT MIN(id) AS id FROM events").fetchone()["id"]
    return Window(floor=head if oldest is None else int(oldest) - 1, head=head)


def _prune(conn: Connection, keep: int, cutoff: float | None) -> int:
    """Oldest first, always a prefix of the ids: what is kept is one unbroken run."""
    with transaction(conn):
        removed = conn.execute("DELETE FROM events WHERE id <= ?",
                               (_head(conn) - max(keep, 0),)).rowcount
        if cutoff is not None:
            removed += conn.execute(
                "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events WHERE at < ?)",
                (cutoff,)).rowcount
    return removed


def parse_event_id(text: str) -> tuple[str, int] | None:
    """``<epoch>-<n>`` as the relay sends it; anything else is None."""
    match = _ID.fullmatch(text.strip())
    return None if match is None else (match[1], int(match[2]))


class EventBus:
    """Publish (after a commit), store, then fan out to every stream, in one order."""

    def __init__(self, store: EventStore,
                 announce: Callable[[int], None] | None = None) -> None:
        """``announce``: with replicas (PostgreSQL), how to tell the others the newest id
        stored here; the streams then follow the global head (``follow``). None (SQLite):
        this relay is the only writer and hands what it stored straight to its streams."""
        self.store = store
        self._pending: deque[tuple[str, str, float]] = deque()
        self._subscribers: set[asyncio.Queue[BusEvent | None]] = set()
        # Which session each subscriber reads for, so that a logout ends its streams at once.
        self._owners: dict[asyncio.Queue[BusEvent | None], str] = {}
        self._forking: asyncio.Future[None] | None = None
        self.closed = False
        self._announce = announce
        # Following (replicas only): every id up to ``_delivered`` went to the streams;
        # ``_target`` is the newest id known stored (here or elsewhere); ``_sweep``: read
        # whatever is stored past ``_delivered`` (a head may have been missed).
        self._delivered = 0
        self._target = 0
        self._sweep = False
        self._catching: asyncio.Task[None] | None = None
        self._started = announce is None

    async def start(self) -> None:
        """With replicas, once listening to them: the streams go on from the newest event
        stored so far (a head heard before this is followed from there)."""
        if self._announce is not None:
            head = (await self.store.window()).head
            self._delivered = max(self._delivered, head)
            self._target = max(self._target, self._delivered)
            self._started = True
            if self._sweep or self._target > self._delivered:
                self._catch_up()

    def follow(self, head: int | None) -> None:
        """Another replica stored events through ``head`` (None: some may have been missed,
        read all there is): the streams get them, from the table, in id order."""
        if head is None:
            self._sweep = True
        elif head > self._target:
            self._target = head
        else:
            return
        self._catch_up()

    def _catch_up(self) -> None:
        running = self._catching is not None and not self._catching.done()
        if not self._started or self.closed or running:
            return  # the running pass looks at ``_target`` again before it ends
        self._catching = asyncio.ensure_future(self._read_missing())

    async def _read_missing(self) -> None:
        """Ids in a store with replicas become visible in id order (each is given out
        inside the one advisory-locked write transaction, so commit order is id order):
        all that exists up to a head announced after its commit can be read, and one
        pass from ``_delivered`` to it hands each id over once, in order."""
        backoff = 0.1
        while not self.closed and (self._sweep or self._delivered < self._target):
            sweep, self._sweep = self._sweep, False
            through = FOLLOW_END if sweep else self._target
            try:
                page = await self.store.after(self._delivered, through, PAGE)
            except Exception as error:
                self._sweep = self._sweep or sweep
                log.warning("events stored by other replicas cannot be read (%s): every "
                            "stream resumes from its id", error)
                self._end_all()  # they reconnect and replay from the table
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for event in page:
                if event.id > self._delivered:
                    self._delivered = event.id
                    self._deliver(event)
            if len(page) >= PAGE:
                self._sweep = self._sweep or sweep  # more than a page: read on from there
            elif not sweep:
                # Nothing else exists up to ``through`` (pruned, or an id a rolled-back
                # write took): do not look for it again.
                self._delivered = max(self._delivered, through)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Queue the event's row now, behind the commit it reports; streams get it once written."""
        self._pending.append((kind, json.dumps(data, separators=(",", ":")), time.time()))
        if (written := self.store.append(self._pending)) is not None:
            written.add_done_callback(self._stored)

    def _stored(self, future: asyncio.Future[list[BusEvent]]) -> None:
        if future.cancelled():
            return
        if (error := future.exception()) is not None:
            log.error("an event could not be stored (%s): every cockpit resyncs", error)
            self._forking = asyncio.ensure_future(self._lost())
            return
        stored = future.result()
        if self._announce is None:
            for event in stored:
                self._deliver(event)
            return
        if not stored:
            return
        self._announce(stored[-1].id)
        if (stored[0].id == self._delivered + 1 and not self._sweep
                and (self._catching is None or self._catching.done())):
            # Nothing can lie between what the streams got and this batch (its ids are
            # contiguous, given out in one transaction): no need to read it back.
            for event in stored:
                self._deliver(event)
            self._delivered = stored[-1].id
            if self._target > self._delivered:
                self._catch_up()  # a head announced meanwhile, beyond this batch
            self._target = max(self._target, self._delivered)
            return
        self.follow(stored[-1].id)

    async def _lost(self) -> None:
        """What could not be written cannot be replayed: a new epoch, and every stream ends."""
        try:
            await self.store.fork()
        except Exception:
            log.exception("the event history could not start over")
        self._end_all()

    def _deliver(self, event: BusEvent) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() >= QUEUE:
                # A reader that cannot keep up is cut off rather than slowing everyone.
                self.unsubscribe(queue)
                queue.put_nowait(None)
                continue
            queue.put_nowait(event)

    def close(self) -> None:
        """Shutting down: end every stream (clients reconnect with Last-Event-ID)."""
        self.closed = True
        if self._catching is not None:
            self._catching.cancel()
        self._end_all()

    def _end_all(self) -> None:
        for queue in self._subscribers:
            queue.put_nowait(None)
        self._subscribers.clear()
        self._owners.clear()

    def subscribe(self, *, owner: str | None = None) -> asyncio.Queue[BusEvent | None]:
        """A queue of every event stored from now on, for session ``owner``.

        Subscribe first, then ``open``: an event stored in between is both in the
        queue and in the store, and the stream skips what it already sent.
        """
        queue: asyncio.Queue[BusEvent | None] = asyncio.Queue()
        if self.closed:
            queue.put_nowait(None)
            return queue
        self._subscribers.add(queue)
        if owner is not None:
            self._owners[queue] = owner
        return queue

    async def open(self, last_event_id: str | None) -> Opening:
        """Where a stream starts for a client that saw ``last_event_id`` (None: from now)."""
        window, epoch = await self.store.window(), self.store.epoch
        if not last_event_id:
            return Opening(epoch, window.head, window.head)
        parsed = parse_event_id(last_event_id)
        if parsed is None or parsed[0] != epoch:
            why = "the id is from another relay history (another data dir, or a restore)"
        elif parsed[1] > window.head:
            why = "the id is newer than this relay's history (restored from a backup?)"
        elif parsed[1] < window.floor:
            why = "the events after that id are no longer kept"
        else:
            return Opening(epoch, parsed[1], window.head)
        reason = json.dumps({"reason": why, "last_event_id": last_event_id[:64]},
                            separators=(",", ":"))
        return Opening(epoch, window.head, window.head,
                       reset=BusEvent(window.head, "reset", reason, epoch))

    async def replay(self, last: int, through: int) -> list[BusEvent]:
        """The next page of what a resuming stream missed."""
        return await self.store.after(last, through, PAGE)

    def unsubscribe(self, queue: asyncio.Queue[BusEvent | None]) -> None:
        self._subscribers.discard(queue)
        self._owners.pop(queue, None)

    def end_session(self, owner: str) -> None:
        """The session ``owner`` is gone (a logout here): its streams get nothing more."""
        for queue, who in list(self._owners.items()):
            if who == owner:
                self.unsubscribe(queue)
                queue.put_nowait(None)
