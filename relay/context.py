"""The running relay's shared state: config, database, stores, wake-up signals, event bus, key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from dragoon.relay.blobs import BlobStore
from dragoon.relay.bus import Bus, Handlers, LocalBus, open_bus
from dragoon.relay.config import RelayConfig
from dragoon.relay.db import Database
from dragoon.relay.events import EventBus, SqliteEventStore
from dragoon.relay.output import OutputStore
from dragoon.relay.quota import LogSizes
from dragoon.relay.replay import NonceStore, ReplayGuard
from dragoon.relay.signals import Signals
from dragoon.relay.stdin import StdinStore
from dragoon.relay.stores import open_stores
from dragoon.relay.tasks import TaskStore
from dragoon.shared.keys import load_private_key_file
from dragoon.shared.signers import KeyFileSigner
from fastapi import Depends, Request


@dataclass
class Relay:
    config: RelayConfig
    db: Database
    signer: KeyFileSigner
    output: OutputStore
    tasks: TaskStore
    blobs: BlobStore
    bus: EventBus
    stdin: StdinStore
    log_sizes: LogSizes
    replay: ReplayGuard
    signals: Signals = field(default_factory=Signals)
    #: The other replicas on the same PostgreSQL database (relay/bus.py); LocalBus: none.
    replicas: Bus = field(default_factory=LocalBus)
    hooks: dict[str, Any] = field(default_factory=dict)
    #: The open routes' rate limits shared with the other replicas (relay/pg_ratelimit.py);
    #: None on SQLite, where relay/ratelimit.py's memory is the whole story.
    rate_buckets: Any = None

    @classmethod
    def open(cls, config: RelayConfig) -> Relay:
        signer = KeyFileSigner(load_private_key_file(config.key_path))
        stores = open_stores(config)  # files, or PostgreSQL when config.database says so
        db = Database.open(config)
        replicas = open_bus(config.database)
        # Wired only when there are other replicas: a SQLite relay's notify and events
        # take exactly the path they always did.
        shared = replicas.shared
        signals = Signals(replicas.publish if shared else None)
        events = EventBus(SqliteEventStore(db), replicas.publish_head if shared else None)
        replicas.handlers = Handlers(keys=signals.wake_keys, everything=signals.wake_all,
                                     head=events.follow)
        return cls(
            config=config, db=db, signer=signer, output=stores.output,
            tasks=TaskStore(config, stores.output), blobs=stores.blobs,
            bus=events,
            stdin=stores.stdin,
            log_sizes=LogSizes(db.run),
            replay=ReplayGuard(db, nonce_ttl=config.nonce_ttl, store=_nonce_store(config)),
            signals=signals, replicas=replicas, rate_buckets=_rate_buckets(config),
        )

    async def start(self) -> None:
        """Before serving: listen to the other replicas, and have the event streams stand
        at the newest event (nothing for a relay on SQLite)."""
        await self.replicas.start()
        await self.bus.start()

    async def stop(self) -> None:
        await self.replicas.close()
        close = getattr(self.replay.store, "close", None)  # the shared nonces' connection
        if close is not None:
            await close()
        if self.rate_buckets is not None:
            await self.rate_buckets.close()

    def stopping(self) -> None:
        """Release held requests (long-polls, follows, event streams) so shutdown is quick."""
        self.signals.close()
        self.bus.close()

    def close(self) -> None:
        self.output.close()
        self.stdin.close()
        self.blobs.close()
        self.db.close()


def _nonce_store(config: RelayConfig) -> NonceStore | None:
    """Replicas share their nonces in the database (relay/pg_nonces.py); one SQLite relay
    holds them in memory (None: ReplayGuard's own)."""
    if not config.database:
        return None
    from dragoon.relay.pg_nonces import PgNonces

    return PgNonces(config.database)


def _rate_buckets(config: RelayConfig) -> Any:
    """Replicas share the open routes' rate-limit buckets in the database."""
    if not config.database:
        return None
    from dragoon.relay.pg_ratelimit import SharedBuckets

    return SharedBuckets(config.database, per_peer_rate=config.open_rate_per_peer,
                         per_peer_burst=config.open_burst_per_peer,
                         total_rate=config.open_rate_total, total_burst=config.open_burst_total)


async def get_relay(request: Request) -> Relay:
    relay: Relay = request.app.state.relay
    return relay


RelayDep = Annotated[Relay, Depends(get_relay)]
