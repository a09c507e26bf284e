"""The ``order`` stream obeys stdout's and stderr's offset rules, and has a cap of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from dragoon.shared.order import HEADER, encode_run

from tests.relay.test_output import _running
from tests.support.relay import DroneClient, PilotSession, RelayProcess

ORDER = HEADER + encode_run("stdout", 4) + encode_run("stderr", 3)


@pytest.fixture
def task_on(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> tuple[DroneClient, str]:
    drone = new_drone()
    return drone, _running(shared_pilot, drone)


def read(pilot: PilotSession, task: str, **params: Any) -> Any:
    answer = pilot.get(f"/v1/tasks/{task}/log", params={"stream": "order", **params})
    assert answer.status_code == 200, answer.text
    return answer


def test_order_appends_by_offset_duplicates_are_acknowledged_gaps_refused(
    shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    assert drone.log(task, "order", 0, ORDER[:10]).json() == {"next_offset": 10}
    assert drone.log(task, "order", 0, ORDER[:10]).json() == {"next_offset": 10}  # a resend
    gap = drone.log(task, "order", 20, ORDER[20:])
    assert gap.status_code == 409 and gap.json() == {**gap.json(), "error": "offset_gap",
                                                     "expected": 10}
    assert drone.log(task, "order", 5, ORDER[5:]).json() == {"next_offset": len(ORDER)}
    answer = read(shared_pilot, task, offset=3, limit=8)
    assert answer.content == ORDER[3:11] and answer.headers["X-Dragoon-Next-Offset"] == "11"
    assert shared_pilot.get(f"/v1/tasks/{task}").json()["order_size"] == len(ORDER)
    # stdout is untouched by it: three streams, each its own offsets.
    assert shared_pilot.get(f"/v1/tasks/{task}/log").content == b""


def test_a_finish_waits_for_the_order_and_then_closes_it(
    shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    drone.log(task, "stdout", 0, b"out\n")
    drone.log(task, "stderr", 0, b"er\n")
    drone.log(task, "order", 0, ORDER[:12])
    early = drone.finish(task, stdout_size=4, stderr_size=3, order_size=len(ORDER))
    assert early.status_code == 409 and early.json()["error"] == "output_incomplete"
    assert early.json()["order_size"] == 12 and early.json()["stdout_size"] == 4
    drone.log(task, "order", 12, ORDER[12:])
    done = drone.finish(task, stdout_size=4, stderr_size=3, order_size=len(ORDER))
    assert done.json() == {"ok": True, "state": "succeeded"}
    answer = read(shared_pilot, task, wait=5)
    assert answer.content == ORDER and answer.headers["X-Dragoon-Eof"] == "1"
    late = drone.log(task, "order", len(ORDER), encode_run("stdout", 1))
    assert late.status_code == 409 and late.json()["error"] == "task_finished"
    assert drone.log(task, "order", 0, ORDER).json() == {"next_offset": len(ORDER)}


def test_an_older_drone_s_finish_without_an_order_size_still_closes(
    shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    drone.log(task, "stdout", 0, b"x")
    assert drone.finish(task, stdout_size=1, stderr_size=0).json()["ok"] is True
    answer = read(shared_pilot, task)
    assert answer.content == b"" and answer.headers["X-Dragoon-Eof"] == "1"


def test_an_unknown_stream_is_still_refused(task_on: tuple[DroneClient, str]) -> None:
    drone, task = task_on
    assert drone.log(task, "orders", 0, b"x").status_code == 422


def test_the_order_has_its_own_cap_and_does_not_eat_the_output_s(tmp_path: Any) -> None:
    with RelayProcess(tmp_path / "relay", config={"output_cap": 40}) as relay:
        pilot = relay.pilot()
        drone = relay.drone("capped", pilot=pilot)
        task = _running(pilot, drone)
        order = HEADER + encode_run("stdout", 1) * 10  # 56 bytes: past 40
        assert drone.log(task, "order", 0, order).json() == {"next_offset": len(order)}
        assert drone.log(task, "order", len(order), b"o 1\n").json() == {
            "next_offset": len(order) + 4}  # past its cap: acknowledged, dropped
        answer = read(pilot, task)
        assert answer.content == order[:40]
        assert answer.headers["X-Dragoon-Truncated"] == "40"  # the order's own cap, said so
        shown = pilot.get(f"/v1/tasks/{task}").json()
        assert shown["order_size"] == 40 and shown["output_truncated"] is False
        # The output's cap is whole: 40 bytes of stdout still fit.
        assert drone.log(task, "stdout", 0, b"y" * 40).json() == {"next_offset": 40}
        answer = pilot.get(f"/v1/tasks/{task}/log")
        assert answer.content == b"y" * 40 and "X-Dragoon-Truncated" not in answer.headers
        finish = drone.finish(task, stdout_size=40, stderr_size=0, order_size=len(order) + 4)
        assert finish.json()["state"] == "succeeded", finish.text
