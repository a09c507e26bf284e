"""Re-enrollment: a taken name is refused without ``replace``; replacing ends the old drone's
work as ``lost`` in the same transaction as the key swap, and the old key is told so.

The attacker here is the stale drone itself (and a token minted before the name was
taken): whatever it does after the replacement must neither run a task twice nor take a
task meant for its successor.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from dragoon.relay import db
from dragoon.shared.enrollment import JoinToken

from tests.relay.test_events import EventReader
from tests.support.relay import (
    DroneClient,
    PilotSession,
    RelayProcess,
    dragoon,
    relay_db,
    wait_until,
)

_counter = iter(range(1, 10_000))


def fresh_name(prefix: str = "re") -> str:
    return f"{prefix}-{next(_counter)}"


def mint(pilot: PilotSession, name: str, **body: Any) -> httpx.Response:
    return pilot.post("/v1/workers", json={"name": name, **body})


def enrolled(relay: RelayProcess, pilot: PilotSession, name: str, *, slots: int = 1,
             replace: bool = False) -> DroneClient:
    answer = mint(pilot, name, replace=replace) if replace else mint(pilot, name)
    assert answer.status_code == 200, answer.text
    return DroneClient.join(answer.json()["token"], url=relay.url, slots=slots)


def last_seen(pilot: PilotSession, name: str) -> float:
    drones = {d["name"]: d for d in pilot.get("/v1/workers").json()["drones"]}
    return float(drones[name]["last_seen"] or 0)


def task_state(pilot: PilotSession, task_id: str) -> dict[str, Any]:
    answer = pilot.get(f"/v1/tasks/{task_id}")
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


# ----- every door refuses a taken name without replace -----


def test_minting_for_an_existing_name_is_refused_with_name_taken(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    name = fresh_name()
    drone = enrolled(shared_relay, shared_pilot, name)
    assert drone.poll().status_code == 200  # online now
    answer = mint(shared_pilot, name)
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert body["error"] == "name_taken"
    assert body["detail"] == f"drone {name} exists (online); use --replace"
    assert drone.poll().status_code == 200  # the refusal changed nothing for the drone


def test_replace_must_be_a_boolean(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    answer = mint(shared_pilot, fresh_name(), replace="yes")
    assert (answer.status_code, answer.json()["error"]) == (422, "invalid")


def test_replace_for_a_free_name_simply_enrolls(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    drone = enrolled(shared_relay, shared_pilot, fresh_name(), replace=True)
    assert drone.poll().status_code == 200


def test_admin_cli_refuses_a_taken_name_unless_replace(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    name = fresh_name()
    old = enrolled(shared_relay, shared_pilot, name)
    args = ("relay", "enroll", "--data", str(shared_relay.data_dir), "--drone", name,
            "--url", shared_relay.url)
    refused = dragoon(*args, check=False)
    assert refused.returncode == 1
    assert f"drone {name} exists (pending); use --replace" in refused.stderr
    assert refused.stdout == ""
    token = dragoon(*args, "--replace").stdout.strip()
    new = DroneClient.join(token, url=shared_relay.url)
    assert new.poll().status_code == 200
    assert old.poll().json()["error"] == "drone_replaced"


def test_a_token_minted_before_the_name_was_taken_is_refused_at_join(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    name = fresh_name()
    early = mint(shared_pilot, name).json()["token"]
    first = enrolled(shared_relay, shared_pilot, name)  # a second token, used first
    with pytest.raises(AssertionError, match=r"409.*name_taken"):
        DroneClient.join(early, url=shared_relay.url)
    assert first.poll().status_code == 200  # the first drone is untouched
    with pytest.raises(AssertionError, match="bad_enrollment_token"):
        DroneClient.join(early, url=shared_relay.url)  # and the refused token is spent


# ----- replacing: the old drone's work ends as lost, queued work waits for the new one -----


def test_replace_ends_dispatched_and_running_tasks_as_lost_and_keeps_queued_ones(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    name = fresh_name()
    old = enrolled(shared_relay, shared_pilot, name, slots=2)
    running = shared_pilot.submit("sleep 600", drone=name)["id"]
    dispatched = shared_pilot.submit("sleep 600", drone=name)["id"]
    handed = old.poll().json()["tasks"]
    assert {t["id"] for t in handed} == {running, dispatched}
    assert old.poll(started=[{"id": running, "pid": 4242}], running=[running]).status_code == 200
    queued = shared_pilot.submit("echo later", drone=name)["id"]
    assert task_state(shared_pilot, running)["state"] == "running"
    assert task_state(shared_pilot, dispatched)["state"] == "dispatched"

    reader = EventReader(shared_pilot)
    try:
        new = enrolled(shared_relay, shared_pilot, name, replace=True)
        for task_id in (running, dispatched):
            event = reader.next_matching("task", lambda t, i=task_id: t["id"] == i)
            assert event["state"] == "lost"
            assert "drone replaced" in event["error"]
        drone_event = reader.next_matching("drone", lambda d: d["name"] == name)
        assert drone_event["fingerprint"] == new.signer.fingerprint
    finally:
        reader.close()
    for task_id in (running, dispatched):
        task = task_state(shared_pilot, task_id)
        assert task["state"] == "lost" and "drone replaced" in task["error"]
    assert task_state(shared_pilot, queued)["state"] == "queued"
    given = new.poll().json()["tasks"]
    assert [t["id"] for t in given] == [queued]  # never the old drone's dispatched task
    assert task_state(shared_pilot, dispatched)["state"] == "lost"
    events = shared_pilot.get("/v1/audit", params={"limit": 20}).json()["events"]
    assert any(e["action"] == "replace" and e["target"] == name for e in events)


def test_the_old_key_is_answered_drone_replaced_on_every_route(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    name = fresh_name()
    old = enrolled(shared_relay, shared_pilot, name)
    task_id = shared_pilot.submit("sleep 600", drone=name)["id"]
    assert [t["id"] for t in old.poll().json()["tasks"]] == [task_id]
    enrolled(shared_relay, shared_pilot, name, replace=True)
    for answer in (old.poll(), old.finish(task_id), old.log(task_id, "stdout", 0, b"x"),
                   old.message(task_id, 0, "hi"), old.blob(b"data", task=task_id, path="a")):
        assert answer.status_code == 401, answer.text
        body = answer.json()
        assert body["error"] == "drone_replaced"
        assert body["drone"] == name and isinstance(body["replaced_at"], float)
        assert name in body["detail"]
    assert task_state(shared_pilot, task_id)["state"] == "lost"  # the stale finish was refused


def test_retired_keys_are_recorded_with_time_and_successor(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    name = fresh_name()
    old = enrolled(shared_relay, shared_pilot, name)
    new = enrolled(shared_relay, shared_pilot, name, replace=True)
    with relay_db(shared_relay.data_dir) as conn:
        rows = conn.execute(
            "SELECT drone, replaced_by, retired_at FROM retired_keys WHERE fingerprint = ?",
            (old.signer.fingerprint,)).fetchall()
    assert len(rows) == 1
    drone, replaced_by, retired_at = rows[0]
    assert (drone, replaced_by) == (name, new.signer.fingerprint)
    assert retired_at > 0


def test_a_held_long_poll_of_the_old_drone_never_takes_its_successors_task(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    name = fresh_name()
    old = enrolled(shared_relay, shared_pilot, name)
    assert old.poll().status_code == 200
    seen = last_seen(shared_pilot, name)
    held: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: held.append(old.poll(wait=20)), daemon=True)
    thread.start()
    # The held poll's first pass records a heartbeat: from then on it sleeps at the relay.
    wait_until(lambda: last_seen(shared_pilot, name) > seen, message="the poll is held")
    new = enrolled(shared_relay, shared_pilot, name, replace=True)
    task_id = shared_pilot.submit("echo once", drone=name)["id"]  # wakes every poll of `name`
    thread.join(40)
    assert held, "the held poll never answered"
    assert held[0].status_code == 401 and held[0].json()["error"] == "drone_replaced"
    assert task_state(shared_pilot, task_id)["state"] == "queued"
    assert [t["id"] for t in new.poll().json()["tasks"]] == [task_id]


def test_the_new_drone_token_names_the_same_drone(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    name = fresh_name()
    enrolled(shared_relay, shared_pilot, name)
    token = JoinToken.decode(mint(shared_pilot, name, replace=True).json()["token"])
    assert token.drone == name


def test_a_database_from_before_re_enrollment_is_migrated(tmp_path: Path) -> None:
    """Tokens minted by an older relay survive the upgrade and may not replace anyone."""
    ours = next(i for i, m in enumerate(db.MIGRATIONS) if "retired_keys" in m)
    with sqlite3.connect(tmp_path / "relay.db") as conn:
        for script in db.MIGRATIONS[:ours]:
            conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {ours}")
        conn.execute("INSERT INTO enrollments (secret_hash, drone, labels, created_by,"
                     " created_at, expires_at) VALUES ('h', 'old-1', '[]', 'alice', 0, 9e9)")
    conn = db.connect(tmp_path / "relay.db")
    try:
        assert conn.execute("SELECT may_replace FROM enrollments").fetchall()[0][0] == 0
        assert conn.execute("SELECT COUNT(*) FROM retired_keys").fetchone()[0] == 0
    finally:
        conn.close()
