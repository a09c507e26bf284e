"""Why a queued task waits (the task's ``waiting``) and the start deadline (``start_within``),
at the relay's API, with test drones made from shared/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.relay import DroneClient, PilotSession, RelayProcess, wait_until


def task(pilot: PilotSession, task_id: str) -> dict:
    answer = pilot.get(f"/v1/tasks/{task_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_waiting_follows_the_drone_busy_draining_offline(
        new_drone: Callable[..., DroneClient], shared_pilot: PilotSession) -> None:
    drone = new_drone(("waitlab",), slots=1)
    assert drone.poll().status_code == 200  # online, one free slot
    first = shared_pilot.submit("sleep 60", drone=drone.name)
    assert first["waiting"]["reason"] == "dispatching"
    handed = drone.poll().json()["tasks"]
    assert [t["id"] for t in handed] == [first["id"]]
    assert task(shared_pilot, first["id"])["waiting"] is None  # no longer queued

    second = shared_pilot.submit("true", drone=drone.name)
    assert second["waiting"] == {"reason": "busy", "drone": drone.name,
                                 "since": second["waiting"]["since"], "slots": 1, "running": 1}
    drain = shared_pilot.post(f"/v1/workers/{drone.name}/drain", json={"drain": True})
    assert drain.status_code == 200
    assert task(shared_pilot, second["id"])["waiting"]["reason"] == "draining"

    on_labels = shared_pilot.submit("true", labels=["waitlab"])
    assert (on_labels["waiting"]["reason"], on_labels["waiting"]["candidates"]) == ("draining", 1)
    nowhere = shared_pilot.submit("true", labels=["waitlab", "nosuch"])
    assert nowhere["waiting"] == {"reason": "no_match", "drone": None,
                                  "labels": ["nosuch", "waitlab"], "candidates": 0}
    listed = shared_pilot.get("/v1/tasks", params={"state": "queued"}).json()["tasks"]
    assert {t["id"]: t["waiting"]["reason"] for t in listed
            if t["id"] in (second["id"], nowhere["id"])} == {
        second["id"]: "draining", nowhere["id"]: "no_match"}


@pytest.fixture
def slow_sweep(tmp_path: Path) -> Iterator[RelayProcess]:
    """A relay whose sweeper runs once at start-up and then not for an hour."""
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 3600}) as process:
        yield process


def test_a_start_deadline_is_kept_on_time_not_a_sweep_later(slow_sweep: RelayProcess) -> None:
    """The sweeper's next pass is an hour away, yet the task is cancelled at its deadline
    (the sweeper wakes for the soonest start_by), and no drone is handed it after that."""
    pilot = slow_sweep.pilot("alice")
    drone = slow_sweep.drone("late-box", pilot=pilot)
    late = pilot.post("/v1/tasks", json={"spec": {"command": "true"}, "drone": "late-box",
                                         "start_within": 1})
    assert late.status_code == 201, late.text
    start_by = late.json()["start_by"]
    assert start_by == pytest.approx(late.json()["created_at"] + 1)
    wait_until(lambda: task(pilot, late.json()["id"])["state"] == "cancelled", timeout=20,
               message="the late task cancelled")
    ended = task(pilot, late.json()["id"])
    assert start_by <= ended["finished_at"] < start_by + 3  # on time, not an hour later
    assert ended["error"].startswith("not started within 1s")
    assert drone.poll().json()["tasks"] == []


@pytest.mark.parametrize("value", [0, -1, "30s", 1.5, 400 * 86400, True])
def test_start_within_is_whole_seconds_in_range(shared_pilot: PilotSession,
                                                value: object) -> None:
    answer = shared_pilot.post("/v1/tasks", json={"spec": {"command": "true"},
                                                  "labels": ["x"], "start_within": value})
    assert answer.status_code == 422, answer.text
    assert "start_within" in answer.text


def test_a_drone_change_republishes_its_queued_tasks_with_the_new_reason(
        tmp_path: Path) -> None:
    from tests.relay.sse import EventStream

    config = {"sweep_interval": 0.1, "offline_after": 1}
    with RelayProcess(tmp_path / "relay", config=config) as relay:
        pilot = relay.pilot()
        drone = relay.drone("moody", ("moodlab",), pilot=pilot)
        drone.poll()
        pilot.post("/v1/workers/moody/drain", json={"drain": True})
        with EventStream(pilot) as events:
            by_name = pilot.submit("true", drone="moody")["id"]
            by_labels = pilot.submit("true", labels=["moodlab"])["id"]
            elsewhere = pilot.submit("true", labels=["otherlab"])["id"]
            for task_id in (by_name, by_labels):
                events.next_matching("task", lambda t, i=task_id: t["id"] == i
                                     and t["waiting"]["reason"] == "draining")
            # silent now: the sweeper marks it offline, and its queued tasks say so
            for task_id in (by_name, by_labels):
                events.next_matching("task", lambda t, i=task_id: t["id"] == i
                                     and t["waiting"]["reason"] == "offline")
            drone.poll()  # back, still draining
            events.next_matching("task", lambda t: t["id"] == by_name
                                 and t["waiting"]["reason"] == "draining")
            pilot.post("/v1/workers/moody/drain", json={"drain": False})
            events.next_matching("task", lambda t: t["id"] == by_name
                                 and t["waiting"]["reason"] == "dispatching")
            others = [t for _, kind, t in events.received
                      if kind == "task" and t["id"] == elsewhere]
            assert [t["waiting"]["reason"] for t in others] == ["no_match"]  # not its drone
