"""A pilot whose session ends (logout elsewhere, key replaced, operator removed, expiry) loses
its event stream and its held requests within seconds, and sees no event from after the end.

Each test records the moment the revocation committed, then makes events happen at once
(before the relay's next periodic look), so a stream that only checked now and then
would deliver them; the test fails if any event published after that moment arrives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.relay.sse import EventStream
from tests.support.relay import (
    DroneClient,
    PilotSession,
    RelayProcess,
    SignedClient,
    add_operator,
    new_signer,
    relay_db,
    wait_until,
)

CLOSES_WITHIN = 10.0  # seconds; the relay re-checks every session_recheck (0.5 s here)
_names = iter(f"pilot{i}" for i in range(1000))


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    root = tmp_path_factory.mktemp("revocation")
    with RelayProcess(root / "relay", config={"session_recheck": 0.5,
                                              "sweep_interval": 0.2}) as process:
        yield process


@pytest.fixture(scope="module")
def drone(relay: RelayProcess) -> DroneClient:
    """Events that need no pilot session: each poll with metrics publishes a drone event."""
    return relay.drone("witness", pilot=relay.pilot("admin"))


def make_events(drone: DroneClient, count: int = 5) -> None:
    for i in range(count):
        assert drone.poll(metrics={"cpu_percent": float(i)}).status_code == 200


def published_after(stream: EventStream, wall_time: float) -> list[dict[str, object]]:
    """Drone events the relay made after ``wall_time`` (a poll's ``last_seen``) that arrived."""
    return [data for _, kind, data in stream.received
            if kind == "drone" and float(data["last_seen"] or 0) > wall_time]


def ends_without_later_events(stream: EventStream, drone: DroneClient, revoke: Callable[[], None]
                              ) -> None:
    """Revoke, note the moment, make events at once; the stream ends and shows none of them."""
    make_events(drone, 1)
    stream.next_matching("drone", lambda d: d["name"] == drone.name)  # it was delivering
    revoke()
    revoked_at = time.time()  # the revocation has committed
    make_events(drone)
    assert stream.ended.wait(CLOSES_WITHIN), "the stream outlived the session"
    print(f"\nstream ended {time.time() - revoked_at:.2f} s after the revocation")
    assert published_after(stream, revoked_at) == []


def test_logout_from_another_client_ends_the_stream(relay: RelayProcess,
                                                    drone: DroneClient) -> None:
    pilot = relay.pilot(next(_names))
    other = SignedClient(relay.url, pilot.signer, token=pilot.token)  # another cockpit
    with EventStream(pilot) as stream:
        ends_without_later_events(
            stream, drone, lambda: other.post("/v1/auth/logout").raise_for_status())
    other.close()
    # And the token opens no new stream.
    assert pilot.get("/v1/events", timeout=10).status_code == 401


def test_replacing_the_pilots_key_ends_the_stream(relay: RelayProcess,
                                                  drone: DroneClient) -> None:
    name = next(_names)
    pilot = relay.pilot(name)
    new_key = relay.data_dir.parent / f"{name}-new" / "id_ed25519"
    new_signer(new_key)
    with EventStream(pilot) as stream:
        ends_without_later_events(
            stream, drone, lambda: add_operator(relay.data_dir, name, Path(f"{new_key}.pub")))


def test_removing_the_operator_ends_the_stream(relay: RelayProcess,
                                               drone: DroneClient) -> None:
    """No admin verb removes a pilot yet; the row going (as any removal would do) is enough."""
    name = next(_names)
    pilot = relay.pilot(name)

    def remove() -> None:
        with relay_db(relay.data_dir) as conn:
            conn.execute("DELETE FROM pilots WHERE name = ?", (name,))

    with EventStream(pilot) as stream:
        ends_without_later_events(stream, drone, remove)


def test_an_expired_session_ends_the_stream(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay", config={"session_ttl": 4, "session_recheck": 0.5,
                                                  "sweep_interval": 60}) as relay:
        witness = relay.drone("witness", pilot=relay.pilot("admin"))
        pilot = relay.pilot("short")
        expires_at = session_end(relay, pilot)
        with EventStream(pilot) as stream:
            make_events(witness, 1)
            stream.next_matching("drone", lambda d: d["name"] == witness.name)

            def ended_while_events_go_on() -> bool:
                make_events(witness, 1)
                return stream.ended.is_set()

            wait_until(ended_while_events_go_on, timeout=4 + CLOSES_WITHIN, interval=0.1,
                       message="the stream ended")
        assert time.time() >= expires_at - 0.5, "ended before the session did"
        assert published_after(stream, expires_at) == []


def session_end(relay: RelayProcess, pilot: PilotSession) -> float:
    from dragoon.relay.auth import token_hash

    with relay_db(relay.data_dir) as conn:
        row = conn.execute("SELECT expires_at FROM sessions WHERE token_hash = ?",
                           (token_hash(pilot.token or ""),)).fetchone()
    return float(row[0])


@pytest.mark.parametrize("path,params", [
    ("/v1/messages", {"wait": 20, "after": 10**9}),
    ("/v1/tasks/{task}/log", {"wait": 20}),
    ("/v1/fetches/{fetch}", {"wait": 20}),
])
def test_a_held_request_is_answered_401_soon_after_logout(
    relay: RelayProcess, drone: DroneClient, path: str, params: dict[str, int],
) -> None:
    pilot = relay.pilot(next(_names))
    task = pilot.submit("sleep 60", labels=["nowhere"])
    fetch = pilot.post(f"/v1/workers/{drone.name}/fetch", json={"path": "/etc/hostname"})
    assert fetch.status_code == 200, fetch.text
    target = path.format(task=task["id"], fetch=fetch.json()["id"])
    answers: list[httpx.Response | BaseException] = []

    def hold() -> None:
        try:
            # Held up to 20 s; the client gives up after 10, so an answer proves the early end.
            answers.append(pilot.get(target, params=params, timeout=CLOSES_WITHIN))
        except BaseException as exc:
            answers.append(exc)

    thread = threading.Thread(target=hold)
    started = time.monotonic()
    thread.start()
    other = SignedClient(relay.url, pilot.signer, token=pilot.token)
    try:
        # Held: a second gone by without an answer (a refusal would be back in milliseconds).
        wait_until(lambda: answers or time.monotonic() - started > 1, timeout=5)
        assert answers == [], answers
        other.post("/v1/auth/logout").raise_for_status()
        thread.join(CLOSES_WITHIN + 5)
    finally:
        other.close()
    assert len(answers) == 1
    answer = answers[0]
    assert isinstance(answer, httpx.Response), answer
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "bad_session"


def test_a_drones_held_poll_ends_when_its_key_is_replaced(relay: RelayProcess) -> None:
    """Re-enrolling a drone name gives it a new key: a poll the old key holds gets no task."""
    admin = relay.pilot(next(_names))
    old = relay.drone("rekeyed", pilot=admin)
    answers: list[httpx.Response | BaseException] = []

    def hold() -> None:
        try:
            answers.append(old.poll(wait=20, timeout=CLOSES_WITHIN))
        except BaseException as exc:
            answers.append(exc)

    thread = threading.Thread(target=hold)
    started = time.monotonic()
    thread.start()
    wait_until(lambda: answers or time.monotonic() - started > 1, timeout=5)
    assert answers == [], answers
    new = relay.drone("rekeyed", pilot=admin, replace=True)  # the same name, a new key
    task = admin.submit("echo for the new key only", drone="rekeyed")
    thread.join(CLOSES_WITHIN + 5)
    assert len(answers) == 1
    answer = answers[0]
    assert isinstance(answer, httpx.Response), answer
    assert task["id"] not in answer.text
    assert (answer.status_code, answer.json()["error"]) == (401, "drone_replaced"), answer.text
    handed = new.poll(wait=5)
    assert task["id"] in handed.text


def test_a_follower_woken_after_logout_is_answered_401_not_the_change(tmp_path: Path) -> None:
    """A log follow woken by a change is checked in the same database call that reads the
    task (routes/tasks.py ``follow_pass``), not by held.wait: with a recheck slice far longer
    than the test, only that check can answer the woken follower 401 instead of the task's
    new state (here a cancel, which would end the follow with a 200 and its eof)."""
    with RelayProcess(tmp_path / "relay", config={"session_recheck": 300}) as relay:
        pilot, other = relay.pilot("follower"), relay.pilot("canceller")
        task = pilot.submit("sleep 60", labels=["nowhere"])["id"]
        answers: list[httpx.Response | BaseException] = []

        def follow() -> None:
            try:
                answers.append(pilot.get(f"/v1/tasks/{task}/log", params={"wait": 20},
                                         timeout=CLOSES_WITHIN))
            except BaseException as exc:
                answers.append(exc)

        thread = threading.Thread(target=follow)
        started = time.monotonic()
        thread.start()
        logout = SignedClient(relay.url, pilot.signer, token=pilot.token)
        try:
            wait_until(lambda: answers or time.monotonic() - started > 1, timeout=5)
            assert answers == [], answers  # held
            logout.post("/v1/auth/logout").raise_for_status()
            other.post(f"/v1/tasks/{task}/cancel", json={}).raise_for_status()  # the wake-up
            thread.join(CLOSES_WITHIN + 5)
        finally:
            logout.close()
        assert len(answers) == 1
        answer = answers[0]
        assert isinstance(answer, httpx.Response), answer
        assert (answer.status_code, answer.json()["error"]) == (401, "bad_session"), answer.text
        assert time.monotonic() - started < CLOSES_WITHIN, "answered by the wake-up, not a slice"
