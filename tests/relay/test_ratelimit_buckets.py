"""relay/ratelimit.py's buckets on a clock the test turns: bursts, refills, the shared bucket."""

from __future__ import annotations

import math

from dragoon.relay.ratelimit import RateLimiter, TokenBucket


def test_a_bucket_gives_its_burst_then_one_token_per_interval() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert math.isclose(bucket.take(0.0), 0.5)  # the next token in half a second
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) > 0


def test_a_bucket_never_holds_more_than_its_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=2, now=0.0)
    assert [bucket.take(3600.0) for _ in range(3)][-1] > 0


def make(clock: list[float], **kwargs: float) -> RateLimiter:
    settings = {"per_peer_rate": 1.0, "per_peer_burst": 2, "total_rate": 1.0,
                "total_burst": 5, **kwargs}
    return RateLimiter(**settings, clock=lambda: clock[0])  # type: ignore[arg-type]


def test_each_peer_has_its_own_budget_under_a_shared_one() -> None:
    clock = [0.0]
    limiter = make(clock)
    assert [limiter.check("a") for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.check("a") > 0
    assert limiter.check("b") == 0.0
    assert limiter.check("b") == 0.0
    assert limiter.check("c") == 0.0  # the fifth of the shared burst
    assert limiter.check("d") > 0  # a new peer, but the shared bucket is empty


def test_a_refusal_by_the_shared_bucket_does_not_spend_the_peers_token() -> None:
    clock = [0.0]
    limiter = make(clock, per_peer_rate=0.001, per_peer_burst=2, total_burst=1, total_rate=1.0)
    assert limiter.check("a") == 0.0
    assert limiter.check("b") > 0  # refused by the shared bucket: b keeps its two tokens
    clock[0] = 1.0
    assert limiter.check("b") == 0.0
    clock[0] = 2.0
    assert limiter.check("b") == 0.0
    clock[0] = 3.0
    assert limiter.check("b") > 0  # now b's own two are spent


def test_the_table_of_peers_is_bounded() -> None:
    clock = [0.0]
    limiter = make(clock, total_burst=10**9, max_peers=100)
    for i in range(1000):
        limiter.check(f"peer-{i}")
    assert limiter.peer_count() <= 100


def test_a_zero_burst_turns_a_bucket_off() -> None:
    clock = [0.0]
    limiter = make(clock, per_peer_burst=0, total_burst=0)
    assert all(limiter.check("a") == 0.0 for _ in range(1000))
