"""Three relay replicas on one PostgreSQL database act as one relay (issue 15).

Each test talks to chosen replicas directly (no balancer), so that every step is known
to cross: a drone long-polling replica A gets a task submitted through B at once (a
LISTEN/NOTIFY wake-up, not its poll timing out); a pilot following a log on B sees the
bytes a drone uploads through A; a signed request accepted by one replica is refused as
a replay by the others; a session made on one works on all; an event stream resumed on
another replica with Last-Event-ID continues with the next id, none missed or repeated.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dragoon.shared.constants import ERR_REPLAYED_NONCE

from tests.support.relay import DroneClient, PilotSession
from tests.support.replicas import ReplicaSet

_names = itertools.count(1)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaSet]:
    root = tmp_path_factory.mktemp("replicas")
    with ReplicaSet(root, count=3, balancer=False, config={"sweep_interval": 0.2}) as group:
        yield group


@pytest.fixture(scope="module")
def pilot(replicas: ReplicaSet) -> PilotSession:
    return replicas.replicas[0].pilot("alice")


def on(session: PilotSession | DroneClient, url: str) -> Any:
    """The same session, its next requests to another replica."""
    session.url = url
    session.reconnect()
    return session


def a_drone(replicas: ReplicaSet, pilot: PilotSession) -> DroneClient:
    on(pilot, replicas.replicas[0].url)
    return replicas.replicas[0].drone(f"cross-{next(_names)}", pilot=pilot)


def test_a_drone_polling_one_replica_gets_a_task_submitted_through_another_at_once(
    replicas: ReplicaSet, pilot: PilotSession,
) -> None:
    a, b = replicas.replicas[1], replicas.replicas[2]
    drone = on(a_drone(replicas, pilot), a.url)
    drone.poll()  # the first poll: online, nothing queued
    got: dict[str, Any] = {}

    def held_poll() -> None:
        started = time.monotonic()
        got["answer"] = drone.poll(wait=20, timeout=30).json()
        got["after"] = time.monotonic() - started

    poller = threading.Thread(target=held_poll)
    poller.start()
    time.sleep(0.3)  # let the poll park on replica A (what is measured is the wake below)
    submitted_at = time.monotonic()
    task = on(pilot, b.url).submit("echo hi", drone=drone.name)
    poller.join(30)
    woke = time.monotonic() - submitted_at
    assert [t["id"] for t in got["answer"]["tasks"]] == [task["id"]]
    assert woke < 3.0, f"the held poll on another replica answered {woke:.2f} s after the submit"


def test_a_log_followed_on_one_replica_shows_bytes_uploaded_through_another(
    replicas: ReplicaSet, pilot: PilotSession,
) -> None:
    a, b = replicas.replicas[0], replicas.replicas[1]
    drone = a_drone(replicas, pilot)
    task = pilot.submit("train", drone=drone.name)["id"]
    drone.poll()
    drone.poll(running=[task], started=[{"id": task}])
    on(pilot, b.url)
    got: dict[str, Any] = {}

    def follow() -> None:
        started = time.monotonic()
        got["answer"] = pilot.get(f"/v1/tasks/{task}/log", params={"wait": 20})
        got["after"] = time.monotonic() - started

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.3)
    on(drone, a.url).log(task, "stdout", 0, b"epoch 1\n")
    follower.join(30)
    assert got["answer"].content == b"epoch 1\n"
    assert got["after"] < 3.0


def test_a_request_accepted_by_one_replica_is_a_replay_at_every_other(
    replicas: ReplicaSet, pilot: PilotSession,
) -> None:
    headers = pilot.signed_headers("GET", "/v1/tasks")
    first = httpx.get(f"{replicas.replicas[0].url}/v1/tasks", headers=headers)
    assert first.status_code == 200
    for other in replicas.replicas[1:]:
        again = httpx.get(f"{other.url}/v1/tasks", headers=headers)
        assert again.status_code == 401 and again.json()["error"] == ERR_REPLAYED_NONCE, again.text


def test_a_session_made_on_one_replica_works_on_all_and_ends_on_all(
    replicas: ReplicaSet, pilot: PilotSession,
) -> None:
    mine = replicas.replicas[2].pilot("bob")  # logged in on replica 2
    for relay in replicas.replicas:
        assert on(mine, relay.url).get("/v1/tasks").status_code == 200
    assert on(mine, replicas.replicas[0].url).post("/v1/auth/logout").status_code in (200, 204)
    for relay in replicas.replicas:
        answer = on(mine, relay.url).get("/v1/tasks")
        assert answer.status_code == 401, (relay.url, answer.text)


def read_events(pilot: PilotSession, url: str, *, last: str | None, until: int,
                timeout: float = 15) -> list[tuple[str, str]]:
    """(id, kind) of the events a stream on ``url`` sends, until ``until`` of them came."""
    headers = on(pilot, url).signed_headers("GET", "/v1/events")
    if last is not None:
        headers["Last-Event-ID"] = last
    seen: list[tuple[str, str]] = []
    event_id = kind = None
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", f"{url}/v1/events", headers=headers, timeout=timeout) as stream:
        assert stream.status_code == 200, stream.read()
        for line in stream.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("event: "):
                kind = line[7:]
            elif line == "" and event_id is not None:
                seen.append((event_id, kind or ""))
                event_id = kind = None
                if len(seen) >= until:
                    break
            if time.monotonic() > deadline:
                break
    return seen


def test_an_event_stream_resumed_on_another_replica_misses_and_repeats_nothing(
    replicas: ReplicaSet, pilot: PilotSession,
) -> None:
    a, b, c = replicas.replicas
    drone = a_drone(replicas, pilot)
    first = read_events(pilot, a.url, last=None, until=1, timeout=3) or []
    # Events made through every replica in turn: each submit is one task event at least.
    for i, relay in enumerate((a, b, c, a, b, c)):
        on(pilot, relay.url).submit(f"echo {i}", drone=drone.name)
    on(pilot, a.url)
    start = first[-1][0] if first else None
    through_a = read_events(pilot, a.url, last=start, until=6)
    assert len(through_a) >= 6
    numbers = [int(i.rsplit("-", 1)[1]) for i, _ in through_a]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    # Resume on B after the third: the rest, in order, the same ids.
    resumed = read_events(pilot, b.url, last=through_a[2][0], until=len(through_a) - 3)
    assert resumed == through_a[3:]



def test_a_client_spreading_its_challenges_over_the_replicas_gets_one_relays_budget(
    replicas: ReplicaSet,
) -> None:
    """The open routes' rate limit is shared (relay/pg_ratelimit.py): a client asking each
    replica in turn gets the per-client burst once (20, refilled at 2 a second), not once
    per replica, as it would if each replica counted only the requests it saw."""
    clients = [httpx.Client(base_url=r.url, timeout=10,
                            transport=httpx.HTTPTransport(local_address="127.0.9.1"))
               for r in replicas.replicas]
    started = time.monotonic()
    try:
        statuses = [clients[i % 3].post("/v1/auth/challenge",
                                        json={"fingerprint": "SHA256:" + "A" * 43}).status_code
                    for i in range(45)]
    finally:
        for client in clients:
            client.close()
    elapsed = time.monotonic() - started
    passed = statuses.count(200)
    assert 429 in statuses, statuses
    assert 20 <= passed <= 20 + 2 * elapsed + 1, (passed, elapsed, statuses)
