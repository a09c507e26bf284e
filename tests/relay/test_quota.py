"""Disk quotas: counted as bytes are stored, refused with 507 and the numbers, never lost.

Output appends, artifact uploads and fetch results past a drone's quota (or
the relay's) are refused before a byte is stored; a resend of what is already
held is still acknowledged; a real drone keeps its spool through the refusal
and delivers every byte once there is room.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared.constants import HEADER_FINGERPRINT
from dragoon.shared.request_auth import sign_request

from tests.drone.conftest import Fleet
from tests.support.relay import (
    DroneClient,
    PilotSession,
    RelayProcess,
    dragoon,
    encode_query,
    init_relay,
    new_signer,
    relay_db,
    wait_until,
)
from tests.support.stored import blob_stored, upload_leftovers

QUOTA = 10 * 1024  # drone_quota = "10K"


def stored(relay: RelayProcess) -> dict[str, int]:
    with relay_db(relay.data_dir) as conn:
        return {r[0]: r[1] for r in conn.execute("SELECT drone, bytes FROM storage")}


def start_task(pilot: PilotSession, drone: DroneClient) -> str:
    task = str(pilot.submit("make", drone=drone.name)["id"])
    drone.poll()
    return task


def refusal(answer: Any) -> tuple[int, str, str]:
    body = answer.json()
    return answer.status_code, body["error"], body["detail"]


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[RelayProcess, PilotSession]]:
    config = {"sweep_interval": 0.2, "retention": "none", "drone_quota": "10K"}
    with RelayProcess(tmp_path / "relay", config=config) as relay:
        yield relay, relay.pilot("alice")


def test_output_past_the_drone_quota_is_refused_and_a_resend_is_still_acknowledged(
    limited: tuple[RelayProcess, PilotSession],
) -> None:
    relay, pilot = limited
    drone = relay.drone("gpu-1", pilot=pilot)
    task = start_task(pilot, drone)
    data = bytes(range(256)) * 40  # 10,240 bytes: exactly the quota
    assert drone.log(task, "stdout", 0, data[:8000]).json() == {"next_offset": 8000}
    over = drone.log(task, "stdout", 8000, data[8000:] + b"!")
    assert refusal(over) == (507, "quota_exceeded", "drone gpu-1 uses 7.8 KiB of 10.0 KiB")
    assert (over.json()["scope"], over.json()["used"], over.json()["quota"]) == ("drone", 8000,
                                                                                 QUOTA)
    assert drone.log(task, "stdout", 0, data[:8000]).json() == {"next_offset": 8000}
    assert drone.log(task, "stdout", 8000, data[8000:]).json() == {"next_offset": QUOTA}
    held = pilot.get(f"/v1/tasks/{task}/log", params={"stream": "stdout"}).content
    assert held == data
    assert stored(relay)["gpu-1"] == QUOTA
    # Another drone has a quota of its own.
    other = relay.drone("gpu-2", pilot=pilot)
    assert drone.log(task, "stderr", 0, b"e").status_code == 507
    assert other.log(start_task(pilot, other), "stdout", 0, data[:5000]).status_code == 200


def test_artifact_past_the_quota_is_refused_before_it_is_stored(
    limited: tuple[RelayProcess, PilotSession],
) -> None:
    relay, pilot = limited
    drone = relay.drone("gpu-1", pilot=pilot)
    task = start_task(pilot, drone)
    first = b"a" * 6000
    assert drone.blob(first, task=task, path="a.bin").status_code == 200
    over = drone.blob(b"b" * 6000, task=task, path="b.bin")
    assert refusal(over) == (507, "quota_exceeded", "drone gpu-1 uses 5.9 KiB of 10.0 KiB")
    listed = pilot.get(f"/v1/tasks/{task}/artifact").json()["artifacts"]
    assert [a["path"] for a in listed] == ["a.bin"]
    digest = hashlib.sha256(b"b" * 6000).hexdigest()
    assert not blob_stored(relay.data_dir, digest)
    assert upload_leftovers(relay.data_dir) == 0
    # The same upload again costs nothing, so it is accepted whatever the usage.
    assert drone.blob(first, task=task, path="a.bin").status_code == 200
    assert stored(relay)["gpu-1"] == 6000


def test_fetch_past_the_quota_fails_at_once_with_the_reason(
    limited: tuple[RelayProcess, PilotSession],
) -> None:
    relay, pilot = limited
    drone = relay.drone("gpu-1", pilot=pilot)
    assert drone.log(start_task(pilot, drone), "stdout", 0, b"x" * 9000).status_code == 200
    fetch = pilot.post(f"/v1/workers/{drone.name}/fetch", json={"path": "/data/big"}).json()
    drone.poll()
    got: dict[str, Any] = {}

    def wait_for_it() -> None:
        begin = time.monotonic()
        got["fetch"] = pilot.get(f"/v1/fetches/{fetch['id']}", params={"wait": 20}).json()
        got["elapsed"] = time.monotonic() - begin

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    over = drone.blob(b"y" * 4000, fetch=fetch["id"])
    waiter.join(25)
    assert refusal(over) == (507, "quota_exceeded", "drone gpu-1 uses 8.8 KiB of 10.0 KiB")
    assert (got["fetch"]["state"], got["fetch"]["error"]) == (
        "failed", "quota_exceeded: drone gpu-1 uses 8.8 KiB of 10.0 KiB")
    assert got["elapsed"] < 10  # woken by the refusal, not by the end of its wait
    again = drone.blob(b"y" * 4000, fetch=fetch["id"])
    assert again.status_code == 409  # final: the drone stops retrying


def test_a_refusal_is_told_to_the_drone_alone(limited: tuple[RelayProcess, PilotSession]) -> None:
    """Someone holding the drone's fingerprint and a fetch id, but not its key, can neither
    learn the drone's usage nor fail the pilot's fetch."""
    relay, pilot = limited
    drone = relay.drone("gpu-1", pilot=pilot)
    assert drone.log(start_task(pilot, drone), "stdout", 0, b"x" * 9000).status_code == 200
    fetch = pilot.post(f"/v1/workers/{drone.name}/fetch", json={"path": "/data/big"}).json()
    data = b"y" * 4000
    query = encode_query({"fetch": fetch["id"], "sha256": hashlib.sha256(data).hexdigest(),
                          "size": len(data)})
    forged = sign_request(new_signer(), method="POST", path="/v1/worker/blob", query=query,
                          body=data)
    forged[HEADER_FINGERPRINT] = drone.signer.fingerprint  # signed by another key
    answer = drone.http.post(f"/v1/worker/blob?{query}", content=data, headers=forged)
    assert (answer.status_code, answer.json()["error"]) == (401, "bad_signature")
    assert "used" not in answer.json()
    assert pilot.get(f"/v1/fetches/{fetch['id']}").json()["state"] == "pending"
    genuine = drone.blob(data, fetch=fetch["id"])
    assert genuine.status_code == 507


def test_the_relay_wide_quota_counts_every_drone(tmp_path: Path) -> None:
    config = {"sweep_interval": 0.2, "storage_quota": "10K"}
    with RelayProcess(tmp_path / "relay", config=config) as relay:
        pilot = relay.pilot("alice")
        one, two = relay.drone("one", pilot=pilot), relay.drone("two", pilot=pilot)
        assert one.log(start_task(pilot, one), "stdout", 0, b"1" * 6000).status_code == 200
        over = two.log(start_task(pilot, two), "stdout", 0, b"2" * 6000)
        assert refusal(over) == (507, "quota_exceeded",
                                 "the relay stores 5.9 KiB of 10.0 KiB (storage_quota)")
        assert over.json()["scope"] == "relay"


def test_gc_makes_room_again(limited: tuple[RelayProcess, PilotSession]) -> None:
    relay, pilot = limited
    drone = relay.drone("gpu-1", slots=2, pilot=pilot)
    old = start_task(pilot, drone)
    assert drone.log(old, "stdout", 0, b"o" * 9000).status_code == 200
    assert drone.finish(old, finished_at=time.time() - 40 * 86400,
                        stdout_size=9000).status_code == 200
    new = start_task(pilot, drone)
    assert drone.log(new, "stdout", 0, b"n" * 4000).status_code == 507
    out = dragoon("relay", "gc", "--data", str(relay.data_dir), "--older-than", "30d",
                  "--json").stdout
    assert json.loads(out)["storage"]["drones"] == {"gpu-1": 0}
    assert drone.log(new, "stdout", 0, b"n" * 4000).json() == {"next_offset": 4000}


def test_usage_counts_logs_artifacts_and_fetches_exactly(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.2}) as relay:
        pilot = relay.pilot("alice")
        drone = relay.drone("gpu-1", pilot=pilot)
        task = start_task(pilot, drone)
        for offset in range(0, 3000, 1000):  # with a resend and an overlapping chunk
            assert drone.log(task, "stdout", offset, b"o" * 1000).status_code == 200
        assert drone.log(task, "stdout", 0, b"o" * 1000).status_code == 200
        assert drone.log(task, "stdout", 2500, b"o" * 1000).status_code == 200
        assert drone.log(task, "stderr", 0, b"e" * 10).status_code == 200
        assert drone.blob(b"a" * 300, task=task, path="a").status_code == 200
        fetch = pilot.post(f"/v1/workers/{drone.name}/fetch", json={"path": "/f"}).json()
        assert drone.blob(b"f" * 70, fetch=fetch["id"]).status_code == 200
        assert stored(relay) == {"gpu-1": 3500 + 10 + 300 + 70}


def test_a_drone_over_quota_keeps_its_output_and_delivers_it_once_there_is_room(
    tmp_path: Path,
) -> None:
    config = {"sweep_interval": 0.2, "drone_quota": "16K"}
    relay = RelayProcess(tmp_path / "relay", config=config)
    relay.start()
    fleet = Fleet(tmp_path, relay, relay.pilot("alice"))
    try:
        drone = fleet.drone("d1")
        count = 6000  # "line-NNNN\n" lines: about 62 KB, far past the quota
        task_id = fleet.submit(f"for i in $(seq 1 {count}); do echo line-$i; done", drone="d1")
        wait_until(lambda: "507" in drone.log_text(), timeout=30,
                   message="the drone told of the quota")
        # The start is reported in the drone's next poll, which may come after its first
        # refused append: wait for it rather than race it.
        task = wait_until(lambda: (seen := fleet.task(task_id))["state"] == "running" and seen,
                          timeout=30, message="the task reported running")
        assert task["stdout_size"] <= 16 * 1024
        relay.stop()
        init_relay(relay.data_dir, config={**config, "drone_quota": "1M"})
        relay.start()
        fleet.pilot.reconnect()
        done = fleet.wait_state(task_id, timeout=120)
        assert done["state"] == "succeeded"
        expected = "".join(f"line-{i}\n" for i in range(1, count + 1)).encode()
        assert fleet.output(task_id) == expected
    finally:
        fleet.close()
        relay.kill9()
