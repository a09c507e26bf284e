"""Rate limits for the routes anyone may call: login challenge, login, drone init.

These routes write state (a challenge row, a failure and an audit record, a
spent join token) before anyone is known, so an unlimited stranger could fill
the tables and keep the single database thread from the signed requests (an
audit measured ~700 challenges a second). Each such route gets token buckets:
one per client address (IPv6 by /64, see relay/peers.py) and one for all
clients together. Over either, the answer is ``429 rate_limited`` with
``Retry-After``, given before the body is read.

The client address is the TCP peer's, or, from a trusted reverse proxy, the one
it names in ``X-Forwarded-For``. A burst of 0 turns a bucket off. Replicas on one
PostgreSQL database also draw on buckets they share (relay/pg_ratelimit.py), after
these: N replicas let a client through as often as one relay does, not N times.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from dragoon.relay.context import Relay
from dragoon.relay.floodlog import FloodLog
from dragoon.relay.peers import TrustedProxies, peer_key, scope_peer
from dragoon.shared import constants as c

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_PEERS: Final = 10_000  # buckets kept; the least recently seen give way (they refill anyway)


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` a second; a request takes one."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """0.0 when a token was taken; otherwise the seconds until there is one."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else math.inf

    def give_back(self) -> None:
        self.tokens = min(self.burst, self.tokens + 1.0)


class RateLimiter:
    """A bucket per peer (a bounded table) under one bucket shared by every peer."""

    def __init__(self, *, per_peer_rate: float, per_peer_burst: int, total_rate: float,
                 total_burst: int, max_peers: int = MAX_PEERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate = per_peer_rate
        self._burst = per_peer_burst
        self._max_peers = max_peers
        self._peers: OrderedDict[str, TokenBucket] = OrderedDict()
        self._total = (TokenBucket(rate=total_rate, burst=total_burst, now=clock())
                       if total_burst > 0 else None)

    def check(self, peer: str) -> float:
        """0.0 to let ``peer``'s request through, else the seconds it should wait."""
        now = self._clock()
        bucket = self._peer_bucket(peer, now)
        if bucket is not None and (wait := bucket.take(now)) > 0:
            return wait
        if self._total is not None and (wait := self._total.take(now)) > 0:
            if bucket is not None:
                bucket.give_back()  # refused for everyone's sake, not for this peer's
            return wait
        return 0.0

    def peer_count(self) -> int:
        return len(self._peers)

    def _peer_bucket(self, peer: str, now: float) -> TokenBucket | None:
        if self._burst <= 0:
            return None
        bucket = self._peers.get(peer)
        if bucket is None:
            bucket = TokenBucket(rate=self._rate, burst=self._burst, now=now)
            self._peers[peer] = bucket
            if len(self._peers) > self._max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        return bucket


class OpenRouteLimits:
    """ASGI middleware: the unsigned routes of PROTOCOL.md, each with its own limiter."""

    def __init__(self, app: ASGIApp, relay: Relay) -> None:
        self.app = app
        config = relay.config
        self.trusted = TrustedProxies(config.trusted_proxies)
        self.flood = FloodLog()
        # The other replicas' buckets too (relay/pg_ratelimit.py); None on SQLite.
        self.shared = getattr(relay, "rate_buckets", None)
        self.limiters = {
            route: RateLimiter(
                per_peer_rate=config.open_rate_per_peer,
                per_peer_burst=config.open_burst_per_peer,
                total_rate=config.open_rate_total, total_burst=config.open_burst_total,
            )
            for route in c.UNSIGNED_ROUTES
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            limiter = self.limiters.get((scope["method"], scope["path"]))
            if limiter is not None:
                client = peer_key(self.trusted.client_of(scope_peer(scope), _headers(scope)))
                wait = limiter.check(client)
                if wait <= 0 and self.shared is not None:
                    wait = await self.shared.check(f"{scope['method']} {scope['path']}", client)
                if wait > 0:
                    self.flood.warn("rate limited",
                                    f"rate limited {scope['path']} for {client}")
                    await _too_many(send, wait)
                    return
        await self.app(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    """X-Forwarded-For, its lines joined in order (the last hops are the nearest)."""
    hops = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-forwarded-for"]
    return {"x-forwarded-for": ", ".join(hops)} if hops else {}


async def _too_many(send: Send, wait: float) -> None:
    seconds = max(1, math.ceil(wait)) if math.isfinite(wait) else 3600
    body = json.dumps({
        "error": "rate_limited",
        "detail": f"too many requests; retry in {seconds} s",
    }).encode()
    await send({
        "type": "http.response.start", "status": 429,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(seconds).encode())],
    })
    await send({"type": "http.response.body", "body": body})
