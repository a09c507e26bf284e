"""Replay protection from the attacker's side: captured requests against a real relay process.

The relay holds nonces in memory and covers a restart with its replay floor
(relay/replay.py, docs/security.md): a captured request must stay refused when
replayed to the same relay, after a graceful restart, after ``kill -9``, when it
was signed ahead of the relay's clock, and when its copies race each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dragoon.cockpit.client import RelayClient
from dragoon.shared import orders
from dragoon.shared.request_auth import new_nonce

from tests.support.relay import DroneClient, PilotSession, RelayProcess, relay_db


@contextlib.contextmanager
def _db(data_dir: Path) -> Iterator[Any]:
    with relay_db(data_dir) as conn:
        yield conn


def stored_floor(data_dir: Path) -> int:
    with _db(data_dir) as conn:
        return int(conn.execute(
            "SELECT value FROM counters WHERE name = 'replay_floor'").fetchone()[0])


def set_stored_floor(data_dir: Path, value: int) -> None:
    """What a relay leaves behind when its clock was later stepped back (the relay is stopped)."""
    with _db(data_dir) as conn:
        conn.execute("UPDATE counters SET value = ? WHERE name = 'replay_floor'", (value,))


def fresh_timestamp(pilot: PilotSession, ahead: int = 0) -> int:
    """Now, or the relay's floor if it is later, as an honest client learns it.

    A relay refuses what was signed before its replay floor (for a few seconds
    after a quick restart) and names the floor in the answer.
    """
    now = int(time.time())
    probe = pilot.http.get("/v1/workers",
                           headers=pilot.signed_headers("GET", "/v1/workers", timestamp=now))
    if probe.status_code == 401:
        assert probe.json()["error"] == "stale_timestamp", probe.text
        now = probe.json()["not_before"]
    else:
        assert probe.status_code == 200, probe.text
    return now + ahead


def task_count(pilot: PilotSession) -> int:
    answer = pilot.get("/v1/tasks")
    assert answer.status_code == 200, answer.text
    return len(answer.json()["tasks"])


def captured_submit(pilot: PilotSession, drone: str, *,
                    timestamp: int) -> tuple[bytes, dict[str, str]]:
    """A signed task submission as it crossed the wire: what an eavesdropper keeps."""
    sealed = pilot.seal({"spec": {"command": "echo once"}, "drone": drone})
    body = json.dumps({**sealed.body,
                       **orders.sign_order(pilot.signer, sealed.order()).wire()}).encode()
    headers = pilot.signed_headers("POST", "/v1/tasks", body=body, timestamp=timestamp)
    headers["content-type"] = "application/json"
    return body, headers


def replay(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """The captured bytes again, on a connection of the attacker's own."""
    with httpx.Client(base_url=url, timeout=30) as http:
        return http.post("/v1/tasks", content=body, headers=headers)


# The replay floor is what a relay that keeps nonces in memory needs across a restart
# (SQLite); a relay on PostgreSQL keeps every nonce in the shared table and has none.


@pytest.fixture
def floor_relay(tmp_path: Path) -> Iterator[RelayProcess]:
    """Pinned to SQLite: a relay on PostgreSQL keeps no floor (relay/replay.py)."""
    with RelayProcess(tmp_path / "relay", backend="sqlite") as process:
        try:
            yield process
        finally:
            process.kill9()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path / "relay") as process:
        try:
            yield process
        finally:
            process.kill9()


@pytest.fixture
def pilot(relay: RelayProcess) -> PilotSession:
    return relay.pilot("alice")


@pytest.fixture
def drone(relay: RelayProcess, pilot: PilotSession) -> DroneClient:
    return relay.drone("d1", pilot=pilot)


def test_a_captured_submit_replayed_to_the_same_relay_is_refused(
    relay: RelayProcess, pilot: PilotSession, drone: DroneClient
) -> None:
    body, headers = captured_submit(pilot, "d1", timestamp=fresh_timestamp(pilot))
    assert replay(relay.url, body, headers).status_code == 201
    again = replay(relay.url, body, headers)
    assert (again.status_code, again.json()["error"]) == (401, "replayed_nonce")
    assert task_count(pilot) == 1


@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "kill9"])
def test_a_captured_submit_replayed_after_a_relay_restart_is_refused(
    relay: RelayProcess, pilot: PilotSession, drone: DroneClient, crash: bool
) -> None:
    body, headers = captured_submit(pilot, "d1", timestamp=fresh_timestamp(pilot))
    assert replay(relay.url, body, headers).status_code == 201
    if crash:
        relay.kill9()
    else:
        relay.stop()
    relay.start()  # the nonce memory is gone with the old process
    again = replay(relay.url, body, headers)
    if relay.backend != "sqlite":
        # On PostgreSQL the nonce itself outlives the process: the shared table refuses it.
        assert (again.status_code, again.json()["error"]) == (401, "replayed_nonce")
        assert task_count(pilot) == 1
        return
    assert (again.status_code, again.json()["error"]) == (401, "stale_timestamp")
    assert again.json()["not_before"] > int(headers["X-RE-Timestamp"])
    assert "signed before the relay's replay floor" in again.json()["detail"]
    assert task_count(pilot) == 1


def test_a_future_dated_submit_replayed_after_kill9_is_refused(
    relay: RelayProcess, pilot: PilotSession, drone: DroneClient
) -> None:
    # A client whose clock runs 50 s ahead: the request is accepted, and its timestamp lies
    # past the floor of a relay restarted right after; only a durable record can refuse it.
    ahead = fresh_timestamp(pilot, 50)
    body, headers = captured_submit(pilot, "d1", timestamp=ahead)
    assert replay(relay.url, body, headers).status_code == 201
    relay.kill9()
    relay.start()
    assert stored_floor(relay.data_dir) <= ahead  # so the floor alone would let it through
    again = replay(relay.url, body, headers)
    assert (again.status_code, again.json()["error"]) == (401, "replayed_nonce")
    assert task_count(pilot) == 1


@pytest.mark.parametrize("ahead", [0, 30], ids=["in-sync", "clock-ahead"])
def test_copies_of_one_request_sent_at_once_let_exactly_one_pass_every_time(
    relay: RelayProcess, pilot: PilotSession, ahead: int
) -> None:
    copies, rounds = 4, 25
    clients = [httpx.Client(base_url=relay.url, timeout=30) for _ in range(copies)]
    try:
        for _ in range(rounds):
            headers = pilot.signed_headers("GET", "/v1/workers", nonce=new_nonce(),
                                           timestamp=fresh_timestamp(pilot, ahead))
            start = threading.Barrier(copies)
            codes: list[int] = []
            lock = threading.Lock()

            def send(http: httpx.Client, headers: dict[str, str] = headers,
                     start: threading.Barrier = start, codes: list[int] = codes,
                     lock: threading.Lock = lock) -> None:
                start.wait()
                answer = http.get("/v1/workers", headers=headers)
                with lock:
                    codes.append(answer.status_code)
            threads = [threading.Thread(target=send, args=(c,)) for c in clients]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert sorted(codes) == [200] + [401] * (copies - 1)
    finally:
        for client in clients:
            client.close()


def test_the_floor_survives_a_clock_that_went_backwards(
    floor_relay: RelayProcess
) -> None:
    relay = floor_relay
    pilot = relay.pilot("alice")
    relay.stop()
    # The last run's mark an hour ahead of today's clock: the clock was stepped back an hour.
    future = int(time.time()) + 3600
    set_stored_floor(relay.data_dir, future)
    relay.start()
    assert stored_floor(relay.data_dir) >= future  # not lowered to the clock
    answer = pilot.get("/v1/workers")
    assert (answer.status_code, answer.json()["error"]) == (401, "stale_timestamp")
    assert answer.json()["not_before"] >= future
    assert "replay floor is" in relay.stderr_text()


def test_honest_clients_sign_again_at_the_floor_after_a_restart(
    floor_relay: RelayProcess
) -> None:
    relay = floor_relay
    pilot = relay.pilot("alice")
    drone = relay.drone("d1", pilot=pilot)
    relay.kill9()
    # As after a quick restart, or seen from a client whose clock is 30 s behind: every
    # request signed now is below the floor.
    floor = int(time.time()) + 30
    set_stored_floor(relay.data_dir, floor)
    relay.start()
    plain = pilot.http.get("/v1/workers", headers=pilot.signed_headers("GET", "/v1/workers"))
    assert (plain.status_code, plain.json()["error"]) == (401, "stale_timestamp")
    assert plain.json()["not_before"] >= floor

    async def as_the_cockpit() -> list[str]:
        async with RelayClient(relay.url, signer=pilot.signer, token=pilot.token,
                               env=pilot.env) as client:
            first = [d["name"] for d in await client.drones()]
            await client.drones()  # and the next request is signed at the floor at once
            return first

    assert asyncio.run(as_the_cockpit()) == ["d1"]
    assert drone.poll().status_code == 200  # the tests' own client does the same
