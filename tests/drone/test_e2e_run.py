"""End to end with a real relay and real drone processes: run, output, exit, timeout, cancel."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.drone.conftest import Fleet
from tests.support.relay import wait_until


@pytest.fixture
def fleet(shared_fleet: Fleet) -> Fleet:
    """These tests never crash the relay: they share one per module (see conftest)."""
    return shared_fleet


def test_a_task_runs_and_its_stdout_stderr_and_exit_code_arrive(fleet: Fleet):
    fleet.drone("d1")
    task_id = fleet.submit("echo hello; echo oops >&2; echo $DRAGOON_TASK_ID; exit 3",
                           drone="d1")
    task = fleet.wait_state(task_id)
    assert task["state"] == "failed" and task["exit_code"] == 3 and task["signal"] is None
    assert fleet.output(task_id) == f"hello\n{task_id}\n".encode()
    assert fleet.output(task_id, "stderr") == b"oops\n"
    assert task["cpu_seconds"] is not None and task["peak_rss"] is not None
    assert task["started_at"] and task["finished_at"] >= task["started_at"]


def test_a_zero_exit_is_succeeded(fleet: Fleet):
    fleet.drone("d1")
    task = fleet.wait_state(fleet.submit("true", drone="d1"))
    assert task["state"] == "succeeded" and task["exit_code"] == 0


def test_a_task_past_its_timeout_is_killed_and_reported_timed_out(fleet: Fleet):
    fleet.drone("d1")
    started = time.monotonic()
    task = fleet.wait_state(fleet.submit("echo start; sleep 60", drone="d1", timeout=1))
    assert task["state"] == "timed_out" and task["signal"] == 15
    assert time.monotonic() - started < 10
    assert fleet.output(task["id"]) == b"start\n"


def test_cancel_kills_the_whole_process_group_within_the_grace(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit(
        "trap '' TERM; bash -c 'sleep 300 & echo $! > grandchild.pid; wait' & "
        "while true; do sleep 0.1; done", drone="d1", grace=1)
    work = drone.data_dir / "work" / task_id
    grandchild = int(wait_until(lambda: (work / "grandchild.pid").exists()
                              and (work / "grandchild.pid").read_text().strip(),
                              message="grandchild pid"))
    assert psutil.pid_exists(grandchild)
    asked = time.monotonic()
    answer = fleet.pilot.post(f"/v1/tasks/{task_id}/cancel", json={"grace": 1})
    assert answer.status_code == 200, answer.text
    task = fleet.wait_state(task_id)
    assert task["state"] == "cancelled" and task["signal"] == 9  # it shrugged SIGTERM off
    assert time.monotonic() - asked < 6
    assert not psutil.pid_exists(grandchild) or \
        psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
