"""Output by offset (duplicate, gap, out of order, cap), following live, and finish checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.relay import DroneClient, PilotSession, RelayProcess


def _running(pilot: PilotSession, drone: DroneClient, command: str = "run") -> str:
    task = pilot.submit(command, drone=drone.name)
    drone.poll()
    drone.poll(running=[task["id"]], started=[{"id": task["id"]}])
    return str(task["id"])


@pytest.fixture
def task_on(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> tuple[DroneClient, str]:
    drone = new_drone()
    return drone, _running(shared_pilot, drone)


def test_chunk_at_the_current_length_is_appended(
    shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    assert drone.log(task, "stdout", 0, b"one\n").json() == {"next_offset": 4}
    assert drone.log(task, "stdout", 4, b"two\n").json() == {"next_offset": 8}
    assert drone.log(task, "stderr", 0, b"err").json() == {"next_offset": 3}
    assert shared_pilot.get(f"/v1/tasks/{task}/log").content == b"one\ntwo\n"
    assert shared_pilot.get(f"/v1/tasks/{task}/log", params={"stream": "stderr"}).content == b"err"


def test_duplicate_chunk_is_acknowledged_not_repeated(
    shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    drone.log(task, "stdout", 0, b"abc")
    assert drone.log(task, "stdout", 0, b"abc").json() == {"next_offset": 3}
    assert drone.log(task, "stdout", 1, b"bcde").json() == {"next_offset": 5}  # overlap
    assert shared_pilot.get(f"/v1/tasks/{task}/log").content == b"abcde"


def test_gap_is_answered_with_the_expected_offset(task_on: tuple[DroneClient, str]) -> None:
    drone, task = task_on
    drone.log(task, "stdout", 0, b"abc")
    answer = drone.log(task, "stdout", 10, b"xyz")
    assert answer.status_code == 409
    assert answer.json()["error"] == "offset_gap" and answer.json()["expected"] == 3


def test_out_of_order_chunks_end_in_order(
    shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    assert drone.log(task, "stdout", 3, b"def").status_code == 409
    drone.log(task, "stdout", 0, b"abc")
    drone.log(task, "stdout", 3, b"def")
    assert shared_pilot.get(f"/v1/tasks/{task}/log").content == b"abcdef"


def test_read_from_an_offset_with_limit_gives_next_offset(
    shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    drone.log(task, "stdout", 0, b"0123456789")
    answer = shared_pilot.get(f"/v1/tasks/{task}/log", params={"offset": 4, "limit": 3})
    assert answer.content == b"456"
    assert answer.headers["X-Dragoon-Offset"] == "4"
    assert answer.headers["X-Dragoon-Next-Offset"] == "7"
    assert "X-Dragoon-Eof" not in answer.headers


def test_follow_is_woken_by_an_append(
    shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    got: dict[str, Any] = {}

    def follow() -> None:
        begin = time.monotonic()
        got["answer"] = shared_pilot.get(f"/v1/tasks/{task}/log", params={"wait": 20})
        got["elapsed"] = time.monotonic() - begin

    thread = threading.Thread(target=follow)
    thread.start()
    drone.log(task, "stdout", 0, b"live\n")
    thread.join(25)
    assert got["answer"].content == b"live\n"
    assert got["elapsed"] < 5


def test_eof_after_the_task_ends_and_every_byte_was_read(
    shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    drone.log(task, "stdout", 0, b"bye\n")
    drone.finish(task, stdout_size=4)
    answer = shared_pilot.get(f"/v1/tasks/{task}/log", params={"wait": 5})
    assert answer.content == b"bye\n" and answer.headers["X-Dragoon-Eof"] == "1"
    assert answer.headers["X-Dragoon-Task-State"] == "succeeded"


def test_finish_before_all_output_arrived_is_refused(
    shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    drone.log(task, "stdout", 0, b"12345")
    answer = drone.finish(task, stdout_size=10)
    assert answer.status_code == 409
    assert answer.json()["error"] == "output_incomplete" and answer.json()["stdout_size"] == 5
    drone.log(task, "stdout", 5, b"67890")
    assert drone.finish(task, stdout_size=10).json() == {"ok": True, "state": "succeeded"}
    assert drone.finish(task, stdout_size=10).json()["ok"] is True  # a repeat is acknowledged


def test_another_drone_cannot_write_a_task_s_output(
    task_on: tuple[DroneClient, str], new_drone: Callable[..., DroneClient]
) -> None:
    _drone, task = task_on
    answer = new_drone().log(task, "stdout", 0, b"intruder")
    assert answer.status_code == 404


def test_output_past_the_cap_is_dropped_and_flagged_out_of_band(tmp_path: Any) -> None:
    """The stream is the drone's sealed records: nothing is written into it, not even a
    marker; the cap is said in the task view and on every read (``X-Dragoon-Truncated``)."""
    with RelayProcess(tmp_path / "relay", config={"output_cap": 10}) as relay:
        pilot = relay.pilot()
        drone = relay.drone("capped", pilot=pilot)
        task = _running(pilot, drone)
        assert drone.log(task, "stdout", 0, b"123456").json() == {"next_offset": 6}
        assert "X-Dragoon-Truncated" not in pilot.get(f"/v1/tasks/{task}/log").headers
        assert drone.log(task, "stdout", 6, b"789abcdef").json() == {"next_offset": 15}
        assert drone.log(task, "stdout", 15, b"more").json() == {"next_offset": 19}
        answer = pilot.get(f"/v1/tasks/{task}/log")
        assert answer.content == b"123456789a"  # up to the cap exactly, and nothing of its own
        assert answer.headers["X-Dragoon-Truncated"] == "10"
        assert pilot.get(f"/v1/tasks/{task}/log", params={"stream": "stderr"}).headers[
            "X-Dragoon-Truncated"] == "10"  # the cap counts both: both are cut
        shown = pilot.get(f"/v1/tasks/{task}").json()
        assert shown["output_truncated"] is True
        assert drone.finish(task, stdout_size=19).json()["state"] == "succeeded"
