"""Wake-ups and event heads across relay replicas: PostgreSQL's LISTEN/NOTIFY, not polling.

One relay process (SQLite) needs none of this: ``LocalBus`` does nothing and the
relay wires nothing to it, so a SQLite relay pays nothing. Several replicas on one
PostgreSQL database each run a ``PgBus``: whatever ``Signals.notify(key)`` wakes here
is published to the others, which wake their own waiters on it (a drone's long-poll
held by replica B answers when replica A queued its task), and the newest event id a
replica stored is published so that every replica's event streams follow the one
global history (relay/events.py).

On the wire: one channel (``CHANNEL``), payloads of compact JSON
``{"r": <replica id>, "k": [[key parts], ...], "h": <head>, "a": 1}``: ``r`` the
sender's random id (a replica hears its own notifications and drops them), ``k`` the
keys, ``h`` the newest event id it stored, ``a`` "wake everything". What is
published in one event-loop tick goes out together (keys as a set, heads as their
maximum), split into as many notifications as PostgreSQL's payload limit needs; a
key too long for one notification on its own is sent as "wake everything" (every
waiter looks again: slower, never wrong). See docs/storage.md.

Two connections per replica, both autocommit: one lives in ``LISTEN``, inside
psycopg's ``notifies()`` generator (which holds that connection for as long as it
waits, so nothing else can run on it), and one sends. A dropped connection is
opened again with back-off; once the listening one is back every local waiter is
woken and the event streams read what they missed from the table, since
notifications sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("dragoon.relay")

CHANNEL: Final = "dragoon_wake"
#: PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; some room for the envelope.
PAYLOAD_LIMIT: Final = 7900
#: How long the listening connection waits for a notification before it checks that
#: the server is still there (a silently dropped network never ends the wait).
PING_EVERY: Final = 30.0
#: How long connecting, a send or that check may take before the connection counts as
#: dropped (a black-holed network would otherwise hold it for the TCP timeout, minutes).
TIMEOUT: Final = 10.0
BACKOFF_FIRST: Final = 0.1
BACKOFF_MAX: Final = 5.0
#: Keys waiting to be sent while the database is away, beyond which one "wake
#: everything" is sent instead (what is kept stays bounded however long the outage).
PENDING_MAX: Final = 10_000

#: How the bus's connections show in ``pg_stat_activity``.
LISTEN_NAME: Final = "dragoon relay bus (listen)"
SEND_NAME: Final = "dragoon relay bus (send)"

Key = tuple[str, ...]


def _ignore(*_args: Any) -> None:
    return None


@dataclass
class Handlers:
    """What a bus calls, on the event loop, for what other replicas sent."""

    keys: Callable[[list[Key]], None] = _ignore  # wake the waiters on these keys
    everything: Callable[[], None] = _ignore  # wake every waiter (overflow, reconnect)
    #: Another replica stored events through this id; None: unknown (after a
    #: reconnect), read whatever was stored since the last one delivered.
    head: Callable[[int | None], None] = _ignore


class Bus(Protocol):
    #: False when there is no other replica to tell (SQLite): the relay wires nothing to it.
    shared: bool
    handlers: Handlers

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def publish(self, key: Hashable) -> None: ...

    def publish_head(self, head: int) -> None: ...


@dataclass
class LocalBus:
    """One relay process: nobody to tell, nothing to hear."""

    shared: bool = False
    handlers: Handlers = field(default_factory=Handlers)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def publish(self, key: Hashable) -> None:
        return None

    def publish_head(self, head: int) -> None:
        return None


def open_bus(database: str) -> Bus:
    """The bus for a relay on ``database`` (the config's; empty: SQLite, no replicas)."""
    return PgBus(database) if database else LocalBus()


def masked(url: str) -> str:
    """``url`` with its password (if any) replaced, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def encode(replica: str, keys: Iterable[Key], head: int | None, everything: bool,
           limit: int = PAYLOAD_LIMIT) -> list[str]:
    """The payloads that carry ``keys`` (and the head, and "wake everything"), each under
    ``limit`` bytes of UTF-8: as few as fit, in order; none when there is nothing to say."""
    base: dict[str, Any] = {"r": replica}
    if head is not None:
        base["h"] = head
    if everything:
        return [_dump({**base, "a": 1})]
    payloads: list[str] = []
    batch: list[Key] = []
    size = len(_dump({**base, "k": []}).encode())
    for key in keys:
        part = len(_dump(list(key)).encode()) + 1  # the comma
        if size + part > limit:
            if not batch:  # this key alone is too long: wake everything instead
                return [_dump({**base, "a": 1})]
            payloads.append(_dump({**base, "k": batch}))
            batch, size = [], len(_dump({**base, "k": []}).encode())
            if size + part > limit:
                return [_dump({**base, "a": 1})]
        batch.append(key)
        size += part
    if batch or head is not None:
        payloads.append(_dump({**base, "k": batch}))
    return payloads


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class BusNotification:
    """One decoded NOTIFY payload: the sending replica, the keys it woke, its event head."""
    replica: str
    keys: list[Key]
    head: int | None
    everything: bool


def decode(payload: str) -> BusNotification:
    """A payload as ``encode`` makes it; ValueError for anything else."""
    data = json.loads(payload)
    if not isinstance(data, dict) or not isinstance(data.get("r"), str):
        raise ValueError("not a bus message")
    keys = data.get("k", [])
    if not isinstance(keys, list) or not all(
            isinstance(key, list) and all(isinstance(part, str) for part in key) for key in keys):
        raise ValueError("keys are not lists of strings")
    head = data.get("h")
    if head is not None and (not isinstance(head, int) or isinstance(head, bool) or head < 0):
        raise ValueError("the head is not an event id")
    return BusNotification(data["r"], [tuple(key) for key in keys], head, bool(data.get("a")))


class PgBus:
    """LISTEN/NOTIFY on the relay's PostgreSQL database, on the relay's event loop."""

    shared = True

    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        self.url = url
        self.channel = channel
        self.replica = secrets.token_hex(8)
        self.handlers = Handlers()
        self._keys: set[Key] = set()
        self._head: int | None = None
        self._everything = False
        self._wanted = asyncio.Event()
        self._listening = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listen_conn: Any = None
        self.reconnects = 0  # how often the listening connection was opened again
        self.closed = False

    @property
    def listen_pid(self) -> int | None:
        """The server process of the listening connection (None while it is away)."""
        conn = self._listen_conn
        return None if conn is None or conn.closed else int(conn.info.backend_pid)

    async def start(self) -> None:
        """Listen before the relay serves anything; fails (clearly) if the database does not
        answer now. Later drops are reconnected in the background."""
        listening = await self._listen()
        try:
            sending = await self._connect_sender()
        except BaseException:
            await listening.close()
            raise
        self._tasks = [asyncio.create_task(self._receive_loop(listening), name="bus-listen"),
                       asyncio.create_task(self._send_loop(sending), name="bus-send")]

    async def close(self) -> None:
        self.closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def wait_listening(self, timeout: float) -> bool:
        """True once the listening connection is up (again)."""
        try:
            await asyncio.wait_for(self._listening.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- sending -------------------------------------------------------------------

    def publish(self, key: Hashable) -> None:
        """Tell the other replicas to wake ``key``'s waiters (sent with this tick's others)."""
        if not isinstance(key, tuple) or not all(isinstance(part, str) for part in key):
            self._everything = True  # not a key the wire carries: everyone looks again
        elif len(self._keys) >= PENDING_MAX:
            self._everything = True
        else:
            self._keys.add(key)
        self._wanted.set()

    def publish_head(self, head: int) -> None:
        """Tell the other replicas events are stored through ``head``."""
        self._head = head if self._head is None else max(self._head, head)
        self._wanted.set()

    def _take(self) -> list[str]:
        keys, head, everything = self._keys, self._head, self._everything
        self._keys, self._head, self._everything = set(), None, False
        return encode(self.replica, sorted(keys), head, everything)

    def _put_back(self, payloads: list[str]) -> None:
        """What could not be sent goes out with the next batch."""
        for payload in payloads:
            message = decode(payload)
            for key in message.keys:
                self.publish(key)
            if message.head is not None:
                self.publish_head(message.head)
            if message.everything:
                self._everything = True

    async def _connect(self, name: str) -> Any:
        import psycopg

        options: dict[str, Any] = {"autocommit": True, "application_name": name}
        if "connect_timeout" not in self.url:
            options["connect_timeout"] = int(TIMEOUT)
        return await psycopg.AsyncConnection.connect(self.url, **options)

    async def _connect_sender(self) -> Any:
        return await self._connect(SEND_NAME)

    async def _send_loop(self, conn: Any) -> None:
        import psycopg

        backoff = BACKOFF_FIRST
        try:
            while True:
                await self._wanted.wait()
                await asyncio.sleep(0)  # one more tick: what this tick still publishes joins
                self._wanted.clear()
                payloads = self._take()
                sent = 0
                try:
                    if conn is None or conn.closed:
                        conn = await self._connect_sender()
                    for payload in payloads:
                        await asyncio.wait_for(conn.execute(
                            "SELECT pg_notify(%s, %s)", (self.channel, payload)), TIMEOUT)
                        sent += 1
                    backoff = BACKOFF_FIRST
                except (psycopg.Error, OSError, TimeoutError) as error:
                    self._put_back(payloads[sent:])
                    log.warning("replica bus: cannot publish on %s (%s); again in %.1fs",
                                masked(self.url), error, backoff)
                    with contextlib.suppress(Exception):
                        if conn is not None:
                            await conn.close()
                    conn = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    self._wanted.set()
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    # -- receiving -----------------------------------------------------------------

    async def _listen(self) -> Any:
        conn = await self._connect(LISTEN_NAME)
        try:
            await conn.execute(f'LISTEN "{self.channel}"')
        except BaseException:
            await conn.close()
            raise
        self._listen_conn = conn
        self._listening.set()
        return conn

    async def _receive_loop(self, conn: Any) -> None:
        import psycopg

        backoff = BACKOFF_FIRST
        try:
            while True:
                try:
                    if conn is None:
                        conn = await self._listen()
                        self.reconnects += 1
                        log.info("replica bus: listening again on %s", masked(self.url))
                        # What other replicas sent while this one was away is lost.
                        self._deliver_everything()
                        backoff = BACKOFF_FIRST
                    async for notify in conn.notifies(timeout=PING_EVERY):
                        self._receive(notify.payload)
                    # Quiet for a while: is the server still there?
                    await asyncio.wait_for(conn.execute("SELECT 1"), TIMEOUT)
                except (psycopg.Error, OSError, TimeoutError) as error:
                    self._listening.clear()
                    self._listen_conn = None
                    log.warning("replica bus: the listening connection to %s dropped (%s); "
                                "again in %.1fs", masked(self.url), error, backoff)
                    with contextlib.suppress(Exception):
                        if conn is not None:
                            await conn.close()
                    conn = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            self._listening.clear()
            self._listen_conn = None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    def _receive(self, payload: str) -> None:
        try:
            message = decode(payload)
        except ValueError as error:
            log.warning("replica bus: a notification that is not ours (%s): waking everyone",
                        error)
            self._deliver_everything()
            return
        if message.replica == self.replica:
            return  # our own, heard back
        try:
            if message.everything:
                self.handlers.everything()
            elif message.keys:
                self.handlers.keys(message.keys)
            if message.head is not None:
                self.handlers.head(message.head)
        except Exception:
            log.exception("replica bus: a handler failed")

    def _deliver_everything(self) -> None:
        try:
            self.handlers.everything()
            self.handlers.head(None)
        except Exception:
            log.exception("replica bus: a handler failed")
