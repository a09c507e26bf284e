"""Artifacts, fetches and messages: streamed uploads checked by hash and size, safe paths,
idempotent re-uploads, Range downloads, the inbox."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dragoon.shared import orders
from dragoon.shared.sealed_files import open_fetch

from tests.support.relay import (
    DroneClient,
    PilotSession,
    RelayProcess,
    encode_query,
    wait_until,
)
from tests.support.stored import upload_leftovers


def _task(pilot: PilotSession, drone: DroneClient) -> str:
    task = pilot.submit("make", drone=drone.name)
    drone.poll()
    return str(task["id"])


@pytest.fixture
def task_on(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> tuple[DroneClient, str]:
    drone = new_drone()
    return drone, _task(shared_pilot, drone)


def test_artifact_upload_is_listed_and_downloaded_with_range(
    shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    data = bytes(range(256)) * 100
    answer = drone.blob(data, task=task, path="out/model.pt")
    assert answer.json() == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    listed = shared_pilot.get(f"/v1/tasks/{task}/artifact").json()["artifacts"]
    assert [(a["path"], a["size"]) for a in listed] == [("out/model.pt", len(data))]
    whole = shared_pilot.get(f"/v1/tasks/{task}/artifact", params={"path": "out/model.pt"})
    assert whole.content == data
    part = shared_pilot.get(f"/v1/tasks/{task}/artifact", params={"path": "out/model.pt"},
                            headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]


def test_same_upload_twice_is_idempotent(task_on: tuple[DroneClient, str]) -> None:
    drone, task = task_on
    first = drone.blob(b"same", task=task, path="a.txt")
    second = drone.blob(b"same", task=task, path="a.txt")
    assert first.status_code == second.status_code == 200
    other = drone.blob(b"different", task=task, path="a.txt")
    assert (other.status_code, other.json()["error"]) == (409, "conflict")


def test_hash_mismatch_is_refused_and_nothing_is_stored(
    shared_relay: RelayProcess, shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    answer = drone.blob(b"payload", task=task, path="x.bin", sha256="0" * 64)
    assert (answer.status_code, answer.json()["error"]) == (400, "hash_mismatch")
    assert shared_pilot.get(f"/v1/tasks/{task}/artifact").json()["artifacts"] == []
    assert upload_leftovers(shared_relay.data_dir) == 0


def test_body_longer_than_declared_size_is_too_large(task_on: tuple[DroneClient, str]) -> None:
    drone, task = task_on
    answer = drone.blob(b"0123456789", task=task, path="x.bin", size=4)
    assert (answer.status_code, answer.json()["error"]) == (413, "too_large")


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../../b", "a//b", "./a",
                                  "a\\..\\b", ""])
def test_path_traversal_in_artifact_names_is_refused(
    task_on: tuple[DroneClient, str], path: str
) -> None:
    drone, task = task_on
    answer = drone.blob(b"x", task=task, path=path)
    assert answer.status_code in (400, 422)
    assert answer.json()["error"] in ("bad_path", "invalid")


def test_artifact_of_another_drone_s_task_is_refused(
    task_on: tuple[DroneClient, str], new_drone: Callable[..., DroneClient]
) -> None:
    _drone, task = task_on
    answer = new_drone().blob(b"x", task=task, path="a")
    assert answer.status_code == 404


def test_oversize_artifact_is_refused_before_and_while_streaming(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay", config={"artifact_max": 1000}) as relay:
        pilot = relay.pilot()
        drone = relay.drone("small", pilot=pilot)
        task = _task(pilot, drone)
        declared = drone.blob(b"x" * 2000, task=task, path="big")
        assert (declared.status_code, declared.json()["error"]) == (413, "too_large")
        assert drone.blob(b"x" * 1000, task=task, path="fits").status_code == 200


def test_fetch_is_handed_to_the_drone_and_served_to_the_pilot(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    fetch = shared_pilot.post(f"/v1/workers/{drone.name}/fetch",
                              json={"path": "/data/run1/metrics.csv"}).json()
    assert fetch["state"] == "pending"
    answer = drone.poll().json()
    assert [f["id"] for f in answer["fetches"]] == [fetch["id"]]
    handed = answer["fetches"][0]
    assert '"kind":"fetch"' in handed["order"]  # the pilot's, signed
    # The path reaches the drone sealed, under a key wrapped to the drone's own key; the
    # relay's copy and what it shows hold no path.
    order = orders.parse_order(handed["order"])
    path, _key = open_fetch(order, payload=handed["payload"], wrap=handed["wrap"],
                            x25519_secret=drone.x25519.secret)
    assert path == "/data/run1/metrics.csv"
    assert "metrics.csv" not in json.dumps(answer)
    assert drone.blob(b"sealed bytes", fetch=fetch["id"], meta="bWV0YQ==").status_code == 200
    shown = shared_pilot.get(f"/v1/fetches/{fetch['id']}", params={"wait": 5}).json()
    assert (shown["state"], shown["size"], shown["meta"]) == ("ready", 12, "bWV0YQ==")
    assert "path" not in shown and "metrics.csv" not in json.dumps(shown)
    assert shared_pilot.get(f"/v1/fetches/{fetch['id']}/content").content == b"sealed bytes"


def test_fetch_error_from_the_drone_fails_the_fetch(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    fetch = shared_pilot.post(f"/v1/workers/{drone.name}/fetch", json={"path": "/root/x"}).json()
    drone.poll()
    drone.poll(fetch_errors=[{"id": fetch["id"], "error": "outside fetch roots"}])
    shown = shared_pilot.get(f"/v1/fetches/{fetch['id']}").json()
    assert (shown["state"], shown["error"]) == ("failed", "outside fetch roots")


def test_messages_reach_the_inbox_once_and_are_acked(
    shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    first = drone.message(task, 0, "epoch 1 done").json()["id"]
    assert drone.message(task, 0, "epoch 1 done").json()["id"] == first
    drone.message(task, 1, "epoch 2 done")
    mine = [m for m in shared_pilot.inbox(unread=1) if m["task"] == task]
    assert [m["text"] for m in mine] == ["epoch 1 done", "epoch 2 done"]
    acked = shared_pilot.post("/v1/messages/ack", json={"ids": [m["id"] for m in mine]}).json()
    assert acked == {"acked": 2}
    unread = shared_pilot.get("/v1/messages", params={"unread": 1}).json()["messages"]
    assert all(m["task"] != task for m in unread)


def test_overlong_message_is_too_large(task_on: tuple[DroneClient, str]) -> None:
    drone, task = task_on
    answer = drone.message(task, 0, "x" * 5000)
    assert (answer.status_code, answer.json()["error"]) == (413, "too_large")



def test_slow_upload_is_judged_by_its_arrival_time(task_on: tuple[DroneClient, str]) -> None:
    """A body still streaming when the signed timestamp turns 60 s old must not be refused."""
    drone, task = task_on
    data = b"slow bytes" * 1000
    # A relay refuses what was signed before its replay floor (a shared relay may have been
    # restarted by a test just before): sign 58 s back only once that is past the floor.
    early = drone.get("/v1/workers", headers=drone.signed_headers(
        "GET", "/v1/workers", timestamp=int(time.time()) - 58))
    if early.status_code == 401 and early.json()["error"] == "stale_timestamp":
        floor = early.json()["not_before"]
        wait_until(lambda: time.time() - 58 >= floor, timeout=70, interval=0.2,
                   message="58 s past the floor")
    timestamp = int(time.time()) - 58
    query = encode_query({"task": task, "path": "slow.bin",
                          "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    headers = drone.signed_headers("POST", "/v1/worker/blob", query, data, timestamp=timestamp)

    def body() -> Iterator[bytes]:
        yield data[:100]
        # The rest arrives only once the timestamp would be stale.
        wait_until(lambda: time.time() > timestamp + 61, timeout=10, message="clock")
        yield data[100:]

    answer = drone.http.post(f"/v1/worker/blob?{query}", content=body(), headers=headers)
    assert answer.status_code == 200, answer.text


def test_fetch_refusal_wakes_a_waiting_pilot_at_once(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    import threading

    drone = new_drone()
    fetch = shared_pilot.post(f"/v1/workers/{drone.name}/fetch", json={"path": "/x"}).json()
    drone.poll()
    got: dict[str, object] = {}

    def wait_for_it() -> None:
        begin = time.monotonic()
        got["answer"] = shared_pilot.get(f"/v1/fetches/{fetch['id']}", params={"wait": 20}).json()
        got["elapsed"] = time.monotonic() - begin

    thread = threading.Thread(target=wait_for_it)
    thread.start()
    drone.poll(fetch_errors=[{"id": fetch["id"], "error": "outside fetch roots"}])
    thread.join(25)
    assert got["answer"]["state"] == "failed"  # type: ignore[index]
    assert got["elapsed"] < 5  # type: ignore[operator]
