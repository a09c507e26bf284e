"""The replay memory itself (relay/replay.py): nonces in memory, the floor and mark on disk."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dragoon.relay.db import Database
from dragoon.relay.replay import FLOOR_COUNTER, LEASE, MemoryNonces, ReplayGuard

from tests.support.relay import open_database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with open_database(tmp_path) as database:  # DRAGOON_TEST_BACKEND's
        yield database


def stored(db: Database) -> tuple[int, set[str]]:
    def read(conn) -> tuple[int, set[str]]:  # type: ignore[no-untyped-def]
        mark = conn.execute("SELECT value FROM counters WHERE name = ?",
                            (FLOOR_COUNTER,)).fetchone()[0]
        return int(mark), {r[0] for r in conn.execute("SELECT nonce FROM nonces")}
    return db.call(read)


def test_a_nonce_is_claimed_once_until_it_expires() -> None:
    nonces = MemoryNonces()
    assert nonces.claim_now("a", expires_at=110, now=100)
    assert not nonces.claim_now("a", expires_at=111, now=101)
    assert nonces.claim_now("a", expires_at=220, now=110)  # expired: a stale request anyway


def test_memory_holds_only_unexpired_nonces() -> None:
    nonces = MemoryNonces()
    for i in range(1000):
        nonces.claim_now(f"n{i}", expires_at=100 + i, now=i * 0.1)
    nonces.claim_now("late", expires_at=10_000, now=1000)
    assert len(nonces) == 99 + 1  # n901..n999 (n900 expired at 1000) and "late"


def test_a_reclaimed_nonce_is_not_dropped_with_its_expired_entry() -> None:
    nonces = MemoryNonces()
    nonces.claim_now("a", expires_at=10, now=0)
    nonces.claim_now("a", expires_at=30, now=20)  # the old entry is still queued
    nonces.prune(25)
    assert not nonces.claim_now("a", expires_at=40, now=25)


def test_the_floor_is_the_last_runs_mark_and_never_goes_down(db: Database) -> None:
    before = time.time()
    first = ReplayGuard(db, nonce_ttl=300)
    assert first.floor == 0  # a new relay: no run before it accepted anything
    assert stored(db)[0] >= math.ceil(before) + LEASE  # its lease covers what it accepts
    second = ReplayGuard(db, nonce_ttl=300)
    assert second.floor == first.mark
    future = int(time.time()) + 3600
    db.call(lambda conn: conn.execute("UPDATE counters SET value = ? WHERE name = ?",
                                      (future, FLOOR_COUNTER)))
    again = ReplayGuard(db, nonce_ttl=300)  # a clock stepped back an hour meanwhile
    assert again.floor == future
    assert stored(db)[0] == future


def test_only_nonces_signed_past_the_mark_are_written_and_a_new_start_loads_them(
    db: Database,
) -> None:
    guard = ReplayGuard(db, nonce_ttl=300)
    now = time.time()

    async def admit_two() -> tuple[bool, bool]:
        synced = await guard.admit("a" * 32, int(now), now)
        ahead = await guard.admit("b" * 32, int(now) + 50, now)
        return synced, ahead

    assert asyncio.run(admit_two()) == (True, True)
    assert stored(db)[1] == {"b" * 32}
    restarted = ReplayGuard(db, nonce_ttl=300)

    async def replay() -> bool:
        return await restarted.admit("b" * 32, int(now) + 50, time.time())

    assert asyncio.run(replay()) is False


@pytest.mark.parametrize("ahead", [0, 50], ids=["in-memory", "group-committed"])
def test_concurrent_admissions_of_one_nonce_let_exactly_one_pass(db: Database,
                                                                ahead: int) -> None:
    guard = ReplayGuard(db, nonce_ttl=300)

    async def race() -> list[bool]:
        results: list[bool] = []
        for round_ in range(50):
            now = time.time()
            nonce = f"{round_:032x}"
            results += [sum(await asyncio.gather(*(
                guard.admit(nonce, int(now) + ahead, now) for _ in range(8)))) == 1]
        return results

    assert all(asyncio.run(race()))


def test_concurrent_nonces_past_the_mark_share_commits(db: Database) -> None:
    guard = ReplayGuard(db, nonce_ttl=300)
    commits = 0
    run = db.run

    async def counting(fn, *args):  # type: ignore[no-untyped-def]
        nonlocal commits
        commits += 1
        return await run(fn, *args)

    db.run = counting  # type: ignore[method-assign]

    async def burst() -> None:
        now = time.time()
        assert all(await asyncio.gather(*(
            guard.admit(f"{i:032x}", int(now) + 50, now) for i in range(40))))

    asyncio.run(burst())
    assert len(stored(db)[1]) == 40
    assert commits < 40
