"""Slots under a burst: every slot stays busy while tasks are queued, a freed slot is
refilled by the poll already held at the relay, and no more tasks run than the drone has
slots. Observed from outside, in the relay's task states and the poll answers on the wire."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.drone.conftest import DroneProcess, Fleet
from tests.drone.proxy import TamperingProxy
from tests.support.relay import wait_until


@pytest.fixture
def fleet(shared_fleet: Fleet) -> Fleet:
    """These tests never crash the relay: they share one per module (see conftest)."""
    return shared_fleet


def gated(gate: Path) -> str:
    """A task that runs until its gate file exists, then says its gate's name."""
    return f"while [ ! -e {gate} ]; do sleep 0.02; done; echo {gate.name}"


def states(fleet: Fleet, drone: str, ids: list[str]) -> dict[str, str]:
    """The tasks' states, all read in one query: one moment at the relay."""
    answer = fleet.pilot.get("/v1/tasks", params={"drone": fleet.name(drone), "limit": 1000})
    assert answer.status_code == 200, answer.text
    found = {str(t["id"]): str(t["state"]) for t in answer.json()["tasks"]}
    return {task_id: found[task_id] for task_id in ids}


def test_a_burst_keeps_every_slot_busy_while_tasks_are_queued(fleet: Fleet, tmp_path: Path):
    slots, total = 8, 24
    fleet.drone("d1", slots=slots, poll_wait=25.0)
    gates = [tmp_path / f"gate-{i}" for i in range(total)]
    ids = [fleet.submit(gated(gate), drone="d1") for gate in gates]
    gate_of = dict(zip(ids, gates, strict=True))
    released: set[str] = set()
    try:
        keep_slots_full(fleet, ids, gate_of, released, slots)
    finally:
        for gate in gates:  # a failed run must not leave its tasks waiting forever
            gate.touch()
    for task_id in ids:
        task = fleet.wait_state(task_id)
        assert task["state"] == "succeeded", task
        assert fleet.output(task_id) == f"{gate_of[task_id].name}\n".encode()


def keep_slots_full(fleet: Fleet, ids: list[str], gate_of: dict[str, Path],
                    released: set[str], slots: int) -> None:
    total = len(ids)
    while len(released) < total:
        # Every slot in use as long as the queue can fill it, never one more.
        busy = min(slots, total - len(released))

        def full(busy: int = busy) -> dict[str, str] | None:
            now = states(fleet, "d1", ids)
            running = [t for t, s in now.items() if s == "running" and t not in released]
            assert len([s for s in now.values() if s in ("running", "dispatched")]) <= slots
            return now if len(running) == busy else None

        now = wait_until(full, timeout=30, message=f"{busy} tasks running")
        # Two of the running ones end: their slots go to the next queued tasks.
        for task_id in [t for t, s in now.items() if s == "running"
                        and t not in released][:2]:
            gate_of[task_id].touch()
            released.add(task_id)


@pytest.fixture
def proxied(fleet: Fleet) -> Iterator[tuple[DroneProcess, TamperingProxy]]:
    proxy = TamperingProxy(fleet.relay.url)
    drone = fleet.drone("d2", start=False, poll_wait=25.0)
    drone.configure(relay=proxy.url)
    drone.start()
    try:
        yield drone, proxy
    finally:
        drone.stop()
        proxy.close()


def test_a_freed_slot_is_refilled_by_the_held_poll_without_polling_again(
        fleet: Fleet, proxied: tuple[DroneProcess, TamperingProxy], tmp_path: Path):
    """One slot, a 25 s long-poll: the finish of the running task wakes the poll the drone
    already holds at the relay, and that poll's answer carries the queued task."""
    _drone, proxy = proxied
    answers: list[list[str]] = []

    def record(answer: dict) -> dict:
        answers.append([str(t["id"]) for t in answer.get("tasks") or []])
        return answer

    proxy.answer_hook = record
    gate = tmp_path / "gate"
    first = fleet.submit(gated(gate), drone="d2")
    try:
        fleet.wait_state(first, "running")
        second = fleet.submit("echo second", drone="d2")
        assert fleet.task(second)["state"] == "queued"  # the one slot is taken
        seen = len(answers)
    finally:
        gate.touch()  # a failed run must not leave the task waiting forever
    assert fleet.wait_state(second)["state"] == "succeeded"
    # The first answer after the slot was taken is the one that carried the queued task:
    # no poll came back empty in between (the drone did not have to ask again).
    assert answers[seen] == [second], answers[seen:]
    assert fleet.output(second) == b"second\n"


def test_a_drone_killed_while_launching_a_burst_runs_no_task_twice(fleet: Fleet,
                                                                    tmp_path: Path):
    """The tasks of one answer launch side by side; a SIGKILL in the middle, then a restart:
    each task ran once or is ended as never started, none ran twice."""
    drone = fleet.drone("d3", slots=8, poll_wait=25.0)
    runs = tmp_path / "runs"
    ids = [fleet.submit(f"echo $DRAGOON_TASK_ID >> {runs}", drone="d3") for _ in range(8)]
    tasks_dir = drone.data_dir / "tasks"
    wait_until(lambda: tasks_dir.is_dir() and any(tasks_dir.iterdir()), timeout=30,
               interval=0.001, message="a task accepted")
    drone.kill9()
    drone.start()
    ended = {task_id: fleet.wait_state(task_id, timeout=60) for task_id in ids}
    ran = runs.read_text().split() if runs.exists() else []
    assert len(ran) == len(set(ran)), f"a task ran twice: {ran}"
    for task_id, task in ended.items():
        if task_id in ran:
            assert task["state"] == "succeeded", task
        else:
            assert task["state"] == "failed", task
            assert "never started" in task["error"] or "not started again" in task["error"]
