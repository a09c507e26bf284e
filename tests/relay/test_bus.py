"""Replicas wake each other (relay/bus.py): two buses on one real PostgreSQL database stand in
for two relay replicas, in one process and one event loop."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dragoon.relay.bus import (
    LISTEN_NAME,
    PAYLOAD_LIMIT,
    SEND_NAME,
    Handlers,
    Key,
    LocalBus,
    PgBus,
    decode,
    encode,
    masked,
    open_bus,
)
from dragoon.relay.config import RelayConfig
from dragoon.relay.context import Relay
from dragoon.relay.events import BusEvent, EventBus, Window
from dragoon.relay.signals import Signals

from tests.support.pg import drop_database, new_database

DEADLINE = 10.0


@pytest.fixture
def database() -> Iterator[str]:
    url = new_database("bus")
    yield url
    drop_database(url)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


@dataclass
class Heard:
    """What a bus handed to its replica, with a way to wait for it."""

    keys: list[list[Key]] = field(default_factory=list)
    everything: int = 0
    heads: list[int | None] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def handlers(self) -> Handlers:
        return Handlers(keys=self._keys, everything=self._everything, head=self._head)

    def all_keys(self) -> set[Key]:
        return {key for batch in self.keys for key in batch}

    def _keys(self, keys: list[Key]) -> None:
        self.keys.append(keys)
        self._poke()

    def _everything(self) -> None:
        self.everything += 1
        self._poke()

    def _head(self, head: int | None) -> None:
        self.heads.append(head)
        self._poke()

    def _poke(self) -> None:
        self.changed.set()

    async def until(self, test: Callable[[], bool], what: str) -> None:
        end = asyncio.get_running_loop().time() + DEADLINE
        while not test():
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(),
                                       end - asyncio.get_running_loop().time())
            except TimeoutError:
                raise AssertionError(f"not heard within {DEADLINE}s: {what}") from None


@asynccontextmanager
async def replica(url: str, heard: Heard | None = None) -> AsyncIterator[PgBus]:
    bus = PgBus(url)
    if heard is not None:
        bus.handlers = heard.handlers()
    await bus.start()
    try:
        yield bus
    finally:
        await bus.close()


def wired(bus: PgBus) -> Signals:
    """Signals as Relay.open wires them to a shared bus."""
    signals = Signals(bus.publish)
    bus.handlers = Handlers(keys=signals.wake_keys, everything=signals.wake_all)
    return signals


async def terminate(url: str, application_name: str, pid: int | None = None) -> int:
    """End a bus's server process from a third connection, as a failover or an admin would."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        cur = await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s"
            " AND (%s::int IS NULL OR pid = %s::int)", (application_name, pid, pid))
        return sum(1 for row in await cur.fetchall() if row[0])


# -- the wire ---------------------------------------------------------------------------


def test_payloads_stay_under_the_limit_and_carry_every_key_once() -> None:
    keys = [("task", f"t-{n:05d}-ünïcødé") for n in range(2000)]
    payloads = encode("r1", keys, 42, False)
    assert len(payloads) > 1
    assert all(len(p.encode()) < PAYLOAD_LIMIT for p in payloads)  # bytes, not characters
    messages = [decode(p) for p in payloads]
    assert [key for m in messages for key in m.keys] == keys
    assert {m.head for m in messages} == {42} and not any(m.everything for m in messages)


def test_a_key_too_long_for_one_notification_becomes_wake_everything() -> None:
    (payload,) = encode("r1", [("task", "a"), ("x" * PAYLOAD_LIMIT,)], 7, False)
    message = decode(payload)
    assert message.everything and message.keys == [] and message.head == 7


def test_nothing_to_say_sends_nothing_and_a_lone_head_is_sent() -> None:
    assert encode("r1", [], None, False) == []
    assert decode(encode("r1", [], 9, False)[0]).head == 9


@pytest.mark.parametrize("payload", ["", "null", "[]", '{"k": []}', '{"r": "x", "k": [1]}',
                                     '{"r": "x", "h": -1}', '{"r": "x", "h": true}'])
def test_a_foreign_payload_is_refused(payload: str) -> None:
    with pytest.raises(ValueError):
        decode(payload)


def test_sqlite_gets_the_local_bus_and_urls_are_logged_masked() -> None:
    assert isinstance(open_bus(""), LocalBus) and not open_bus("").shared
    assert isinstance(open_bus("postgresql://u@h/db"), PgBus)
    assert masked("postgresql://relay:s3cret@db.example:5433/x") == \
        "postgresql://relay:***@db.example:5433/x"
    assert masked("postgresql://relay@db/x") == "postgresql://relay@db/x"


# -- two replicas on one database ------------------------------------------------------------


def test_a_key_notified_on_one_replica_wakes_a_waiter_on_the_other(database: str) -> None:
    async def scenario() -> None:
        heard_a = Heard()
        async with replica(database) as a, replica(database) as b:
            signals_a, signals_b = wired(a), wired(b)
            a.handlers = _both(a.handlers, heard_a)
            key = ("task", "t-1")
            since = signals_b.version(key)
            waiter = asyncio.ensure_future(signals_b.wait(key, since, DEADLINE))
            signals_a.notify(key)
            assert await waiter, "B's waiter woke"
            assert signals_a.version(key) != since  # and A's own waiters too, locally
            # A hears everything on the channel, its own included; it must drop its own.
            signals_b.notify(("drone", "d-1"))
            await heard_a.until(lambda: ("drone", "d-1") in heard_a.all_keys(), "B's key on A")
            assert key not in heard_a.all_keys(), "A woke on its own echo"
            # What B was told it does not send on: A heard from B only B's own key.
            assert heard_a.all_keys() == {("drone", "d-1")}
    run(scenario)


def _both(first: Handlers, second: Heard) -> Handlers:
    """Deliver to the replica's signals and record it for the test."""
    record = second.handlers()

    def keys(k: list[Key]) -> None:
        first.keys(k)
        record.keys(k)

    def everything() -> None:
        first.everything()
        record.everything()

    def head(h: int | None) -> None:
        first.head(h)
        record.head(h)

    return Handlers(keys=keys, everything=everything, head=head)


def test_keys_of_one_tick_go_in_one_notification(database: str) -> None:
    async def scenario() -> None:
        heard = Heard()
        async with replica(database) as a, replica(database, heard):
            keys = [("task", f"t-{n}") for n in range(200)]
            for key in keys + keys:  # each twice: one copy goes out
                a.publish(key)
            a.publish_head(5)
            a.publish_head(3)
            await heard.until(lambda: len(heard.all_keys()) == 200, "200 keys")
            assert len(heard.keys) == 1, "one notification for one tick's keys"
            assert sorted(heard.keys[0]) == sorted(keys)
            assert heard.heads == [5], "heads coalesce to the newest"
            assert heard.everything == 0
    run(scenario)


def test_more_keys_than_one_payload_holds_arrive_split(database: str) -> None:
    async def scenario() -> None:
        heard = Heard()
        async with replica(database) as a, replica(database, heard):
            keys = {("task", f"{n:032x}") for n in range(2000)}  # about 90 kB of keys
            for key in keys:
                a.publish(key)
            await heard.until(lambda: heard.all_keys() == keys, "every key")
            assert 10 <= len(heard.keys) <= 20 and heard.everything == 0
    run(scenario)


def test_a_key_over_the_payload_limit_still_wakes_every_waiter(database: str) -> None:
    async def scenario() -> None:
        async with replica(database) as a, replica(database) as b:
            signals_a, signals_b = wired(a), wired(b)
            other = ("drone", "d-9")
            since = signals_b.version(other)  # read, not yet waiting: must see it too
            waiter = asyncio.ensure_future(signals_b.wait(("task", "t-2"), 0, DEADLINE))
            signals_a.notify(("task", "x" * (PAYLOAD_LIMIT + 100)))
            assert await waiter, "a waiter on another key woke (wake everything)"
            assert signals_b.version(other) != since
    run(scenario)


def test_the_listening_connection_killed_reconnects_and_wakes_every_waiter(database: str) -> None:
    async def scenario() -> None:
        heard = Heard()
        async with replica(database) as a, replica(database) as b:
            signals_a, signals_b = wired(a), wired(b)
            b.handlers = _both(b.handlers, heard)
            waiter = asyncio.ensure_future(signals_b.wait(("task", "t-3"), 0, DEADLINE))
            assert await terminate(database, LISTEN_NAME, b.listen_pid) == 1
            assert await waiter, "the reconnect woke the waiter"
            await heard.until(lambda: heard.everything >= 1 and None in heard.heads,
                              "wake everything and read every event, after the reconnect")
            assert b.reconnects == 1
            # B listens again: a key from A reaches it.
            signals_a.notify(("drone", "d-3"))
            await heard.until(lambda: ("drone", "d-3") in heard.all_keys(), "A's key after")
    run(scenario)


def test_the_sending_connection_killed_resends_what_it_could_not_send(database: str) -> None:
    async def scenario() -> None:
        heard = Heard()
        async with replica(database) as a, replica(database, heard):
            assert await terminate(database, SEND_NAME) == 2  # both replicas' senders
            a.publish(("task", "t-4"))
            await heard.until(lambda: ("task", "t-4") in heard.all_keys(), "the key, resent")
    run(scenario)


def test_nothing_is_lost_across_the_listeners_idle_checks(
        database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listener leaves its wait every PING_EVERY to check the server: what arrives
    meanwhile is kept by the connection and handed over at the next wait."""
    from dragoon.relay import bus as bus_module

    monkeypatch.setattr(bus_module, "PING_EVERY", 0.05)

    async def scenario() -> None:
        heard = Heard()
        async with replica(database) as a, replica(database, heard) as b:
            sent: set[Key] = set()
            end = asyncio.get_running_loop().time() + 0.5
            n = 0
            while asyncio.get_running_loop().time() < end:
                key = ("task", f"t-{n}")
                a.publish(key)
                sent.add(key)
                n += 1
                await asyncio.sleep(0.002)  # one notification every few milliseconds
            await heard.until(lambda: heard.all_keys() == sent, f"all {len(sent)} keys")
            assert b.reconnects == 0 and len(heard.keys) > 20
    run(scenario)


def test_a_bus_on_a_database_that_does_not_answer_fails_to_start() -> None:
    async def scenario() -> None:
        bus = PgBus("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
        with pytest.raises(psycopg.OperationalError):
            await bus.start()
    run(scenario)


# -- the event streams follow the global head ------------------------------------------------


class Table:
    """The ``events`` table as PostgreSQL holds it for every replica: ids given out under
    one lock, so visible in id order; some ids never appear (a rolled-back write took them)."""

    def __init__(self) -> None:
        self.rows: list[BusEvent] = []
        self.next_id = 1
        self.grown = asyncio.Event()

    async def until(self, count: int) -> None:
        while len(self.rows) < count:
            self.grown.clear()
            await asyncio.wait_for(self.grown.wait(), DEADLINE)


class MemoryStore:
    """An EventStore on ``Table`` whose writes land after a random delay, as a database
    thread's would, so that two replicas' writes interleave."""

    epoch = "00000000aa"

    def __init__(self, table: Table, rng: random.Random | None = None) -> None:
        """``rng`` None: no gaps, and every write lands one loop turn later."""
        self.table = table
        self.rng = rng
        self._queued = False
        self.reads = 0

    def append(self, pending: Any) -> asyncio.Future[list[BusEvent]] | None:
        if self._queued:
            return None
        self._queued = True
        future: asyncio.Future[list[BusEvent]] = asyncio.get_running_loop().create_future()
        delay = 0.0 if self.rng is None else self.rng.random() * 0.004
        asyncio.get_running_loop().call_later(delay, self._write, pending, future)
        return future

    def _write(self, pending: Any, future: asyncio.Future[list[BusEvent]]) -> None:
        self._queued = False
        stored = []
        if self.rng is not None and self.rng.random() < 0.1:
            self.table.next_id += 1  # a gap
        while pending:
            kind, payload, _at = pending.popleft()
            stored.append(BusEvent(self.table.next_id, kind, payload, self.epoch))
            self.table.next_id += 1
        self.table.rows.extend(stored)
        self.table.grown.set()
        future.set_result(stored)

    async def window(self) -> Window:
        return Window(floor=0, head=self.table.next_id - 1)

    async def after(self, last: int, through: int, limit: int) -> list[BusEvent]:
        self.reads += 1
        await asyncio.sleep(0)  # a hop to the database thread and back
        return [e for e in self.table.rows if last < e.id <= through][:limit]

    async def prune(self, *, keep: int, cutoff: float | None) -> int:
        return 0

    async def fork(self) -> None:
        return None


async def drain(queue: asyncio.Queue[BusEvent | None], count: int) -> list[int]:
    ids = []
    while len(ids) < count:
        event = await asyncio.wait_for(queue.get(), DEADLINE)
        assert event is not None, "the stream was ended"
        ids.append(event.id)
    return ids


async def drain_through(queue: asyncio.Queue[BusEvent | None], last: int) -> list[int]:
    ids: list[int] = []
    while not ids or ids[-1] < last:
        event = await asyncio.wait_for(queue.get(), DEADLINE)
        assert event is not None, "the stream was ended"
        ids.append(event.id)
    return ids


def test_streams_on_two_replicas_get_every_event_once_in_order(database: str) -> None:
    async def scenario() -> None:
        table, rng = Table(), random.Random(15)
        async with replica(database) as a, replica(database) as b:
            events_a = EventBus(MemoryStore(table, rng), a.publish_head)
            events_b = EventBus(MemoryStore(table, rng), b.publish_head)
            a.handlers = Handlers(head=events_a.follow)
            b.handlers = Handlers(head=events_b.follow)
            await events_a.start()
            await events_b.start()
            streams = [bus.subscribe() for bus in (events_a, events_b) for _ in range(2)]
            total = 0
            for round_ in range(60):
                for _ in range(rng.randint(0, 4)):
                    events_a.publish("task", {"from": "a", "n": round_})
                    total += 1
                for _ in range(rng.randint(0, 4)):
                    events_b.publish("task", {"from": "b", "n": round_})
                    total += 1
                await asyncio.sleep(rng.random() * 0.003)  # the writes interleave
            for stream in streams:
                ids = await drain(stream, total)
                assert ids == [e.id for e in table.rows], "every id once, in id order"
                assert stream.empty()
            froms = {json.loads(e.payload)["from"] for e in table.rows}
            assert froms == {"a", "b"}
    run(scenario)


def test_events_stored_while_a_replica_was_not_listening_reach_its_streams(
        database: str) -> None:
    """A's heads never reach B (lost while B was away); B's listener reconnects, and its
    streams read from the table what A stored."""
    async def scenario() -> None:
        table = Table()
        async with replica(database) as b:
            events_a = EventBus(MemoryStore(table), lambda head: None)
            events_b = EventBus(MemoryStore(table), b.publish_head)
            b.handlers = Handlers(head=events_b.follow)
            await events_a.start()
            await events_b.start()
            stream = events_b.subscribe()
            for n in range(3):
                events_a.publish("task", {"n": n})
            await table.until(3)
            assert stream.empty()
            assert await terminate(database, LISTEN_NAME, b.listen_pid) == 1
            assert await drain(stream, 3) == [1, 2, 3]
            assert b.reconnects == 1
    run(scenario)


def test_a_local_write_behind_an_unheard_remote_one_waits_for_it() -> None:
    """A stores 2 while B's 1 has not been announced yet: A reads 1 from the table first."""
    async def scenario() -> None:
        table = Table()
        announced_a: list[int] = []
        events_a = EventBus(MemoryStore(table), announced_a.append)
        events_b = EventBus(MemoryStore(table), lambda head: None)  # B's head is lost
        await events_a.start()
        await events_b.start()
        stream = events_a.subscribe()
        events_b.publish("task", {"n": 1})
        await table.until(1)
        events_a.publish("task", {"n": 2})
        assert await drain(stream, 2) == [1, 2]
        assert announced_a == [2]
        # B stores more and its announcement is lost; a reconnect (head unknown) reads it.
        events_b.publish("task", {"n": 3})
        await table.until(3)
        events_a.follow(None)
        assert await drain(stream, 1) == [3]
    run(scenario)


def test_a_replica_alone_hands_its_events_over_without_reading_them_back() -> None:
    async def scenario() -> None:
        store = MemoryStore(Table())
        events = EventBus(store, lambda head: None)
        await events.start()
        stream = events.subscribe()
        for n in range(5):
            events.publish("task", {"n": n})
            await drain(stream, 1)
        assert store.reads == 0
    run(scenario)


class PgTableStore:
    """An EventStore on a real PostgreSQL ``events`` table, written as the relay writes on
    PostgreSQL: one connection on one thread per replica, each write transaction under the
    one advisory lock. ``hold`` keeps a transaction open a moment after its id is given out
    (as a slow write would), so that another replica's read lands in that window."""

    epoch = "00000000bb"
    LOCK = 0x647261676F6F6E

    def __init__(self, url: str, rng: random.Random, *, lock: bool = True) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.thread = ThreadPoolExecutor(1)
        self.rng = rng
        self.lock = lock
        self._queued = False

    @staticmethod
    def create(url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS events (id BIGINT GENERATED BY DEFAULT AS"
                         " IDENTITY PRIMARY KEY, kind TEXT NOT NULL, data TEXT NOT NULL)")

    def close(self) -> None:
        self.thread.shutdown()
        self.conn.close()

    def _run(self, job: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return asyncio.wrap_future(self.thread.submit(job, *args))

    def append(self, pending: Any) -> asyncio.Future[list[BusEvent]] | None:
        if self._queued:
            return None
        self._queued = True
        return self._run(self._write, pending)

    def _write(self, pending: Any) -> list[BusEvent]:
        self._queued = False
        batch = []
        while pending:
            batch.append(pending.popleft())
        if not batch:
            return []
        hold = self.rng.random() * 0.003
        with self.conn.transaction():
            if self.lock:
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.LOCK,))
            stored = []
            for kind, payload, _at in batch:
                (event_id,) = self.conn.execute(
                    "INSERT INTO events (kind, data) VALUES (%s, %s) RETURNING id",
                    (kind, payload)).fetchone() or (0,)
                stored.append(BusEvent(event_id, kind, payload, self.epoch))
            time.sleep(hold)  # the write's own work, between its ids and its commit
        return stored

    async def window(self) -> Window:
        return Window(floor=0, head=await self._run(self._head))

    def _head(self) -> int:
        """The newest id given out, read once the write in flight (if any) committed: the
        sequence moves at ``nextval``, before the commit, so an unlocked read could name
        an id nobody can read yet."""
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (self.LOCK,))
            row = self.conn.execute("SELECT last_value FROM pg_sequences"
                                    " WHERE sequencename = 'events_id_seq'").fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    async def after(self, last: int, through: int, limit: int) -> list[BusEvent]:
        rows = await self._run(lambda: self.conn.execute(
            "SELECT id, kind, data FROM events WHERE id > %s AND id <= %s ORDER BY id LIMIT %s",
            (last, through, limit)).fetchall())
        return [BusEvent(r[0], r[1], r[2], self.epoch) for r in rows]

    async def prune(self, *, keep: int, cutoff: float | None) -> int:
        return 0

    async def fork(self) -> None:
        return None


async def stream_from(events: EventBus) -> tuple[asyncio.Queue[BusEvent | None], int, list[int]]:
    """As GET /v1/events opens a stream: subscribe, read where the store stands, replay."""
    queue = events.subscribe()
    opening = await events.open("00000000bb-0")
    replayed = [e.id for e in await events.replay(opening.start, opening.head)]
    return queue, opening.head, replayed


def test_replicas_on_a_real_table_stream_every_id_once_in_order(database: str) -> None:
    PgTableStore.create(database)

    async def scenario() -> None:
        rng = random.Random(4)
        stores = [PgTableStore(database, rng), PgTableStore(database, rng)]
        try:
            async with replica(database) as a, replica(database) as b:
                events_a = EventBus(stores[0], a.publish_head)
                events_b = EventBus(stores[1], b.publish_head)
                a.handlers = Handlers(head=events_a.follow)
                b.handlers = Handlers(head=events_b.follow)
                await events_a.start()
                await events_b.start()
                streams = [events_a.subscribe(), events_b.subscribe()]
                late: list[tuple[asyncio.Queue[BusEvent | None], int, list[int]]] = []
                total = 0
                for round_ in range(40):
                    for events in (events_a, events_b):
                        for _ in range(rng.randint(0, 3)):
                            events.publish("task", {"n": round_})
                            total += 1
                    if round_ in (10, 25):  # streams that open meanwhile, one on each
                        late.append(await stream_from(events_a if round_ == 10 else events_b))
                    await asyncio.sleep(rng.random() * 0.004)  # the writes interleave
                first = await drain(streams[0], total)  # every write has landed
                in_table = [e.id for e in await stores[0].after(0, 2**62, 10_000)]
                assert first == in_table, "every id once, in id order"
                assert await drain(streams[1], total) == in_table
                for queue, head, replayed in late:
                    live = await drain_through(queue, in_table[-1])
                    assert replayed + [i for i in live if i > head] == in_table
                    assert live == sorted(set(live)), "in order, none twice"
        finally:
            for store in stores:
                store.close()
    run(scenario)


def test_a_head_read_under_the_lock_waits_for_the_write_in_flight(database: str) -> None:
    """Why a replica's head must be read under the write lock (docs/storage.md): the
    sequence moves at ``nextval``, so while another replica's write is in flight an
    unlocked read names an id that no one can read yet, and a stream opened there would
    skip it for good."""
    PgTableStore.create(database)
    store = PgTableStore(database, random.Random(0))
    try:
        with psycopg.connect(database, autocommit=True) as writer:
            with writer.transaction():
                writer.execute("SELECT pg_advisory_xact_lock(%s)", (PgTableStore.LOCK,))
                writer.execute("INSERT INTO events (kind, data) VALUES ('task', '{}')")
                unlocked = store.conn.execute(
                    "SELECT last_value FROM pg_sequences"
                    " WHERE sequencename = 'events_id_seq'").fetchone()
                assert unlocked is not None and unlocked[0] == 1
                assert store.conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
                locked = store.thread.submit(store._head)
                assert not locked.done()
                with pytest.raises(TimeoutError):
                    locked.result(timeout=0.3)  # it waits for the commit
            assert locked.result(timeout=DEADLINE) == 1
            assert store.conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
    finally:
        store.close()


# -- the relay wires it ----------------------------------------------------------------------


def _relay_config(tmp_path: Path, database: str = "") -> RelayConfig:
    from tests.support.relay import init_relay

    data = tmp_path / "data"
    init_relay(data, config={"database": database} if database else None, backend="sqlite")
    return RelayConfig.load(data)


def test_a_relay_on_sqlite_has_no_bus_wired(tmp_path: Path) -> None:
    relay = Relay.open(_relay_config(tmp_path))
    try:
        assert isinstance(relay.replicas, LocalBus)
        assert relay.signals._publish is None and relay.bus._announce is None
    finally:
        relay.close()


def test_a_relay_on_postgresql_wakes_and_is_woken_by_another_replica(
        tmp_path: Path, database: str) -> None:
    config = _relay_config(tmp_path, database)

    async def scenario() -> None:
        relay = Relay.open(config)
        heard = Heard()
        try:
            await relay.start()
            assert isinstance(relay.replicas, PgBus)
            async with replica(database, heard) as other:
                since = relay.signals.version(("task", "t-5"))
                waiter = asyncio.ensure_future(relay.signals.wait(("task", "t-5"), since,
                                                                  DEADLINE))
                other.publish(("task", "t-5"))
                assert await waiter, "the relay's waiter woke on the other replica's key"
                relay.signals.notify(("drone", "d-5"))
                await heard.until(lambda: ("drone", "d-5") in heard.all_keys(), "its key")
                relay.bus.publish("task", {"id": "t-5"})
                await heard.until(lambda: any(h for h in heard.heads), "its event head")
        finally:
            relay.stopping()
            await relay.stop()
            relay.close()
    run(scenario)
