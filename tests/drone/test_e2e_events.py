"""The drone's task path is event-driven, seen from outside its process.

An idle drone does not wake for tasks (its main thread's context switches over
an idle window), a re-adopted task's exit comes through a pidfd the new drone
holds on the wrapper, the timeout and the kill's grace survive a drone restart,
and hundreds of tasks leave no inotify watch or pidfd open behind them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from dragoon.drone import watch

from tests.drone.conftest import DroneProcess, Fleet
from tests.support.relay import wait_until

pytestmark = pytest.mark.skipif(not watch.pidfd_supported(), reason="needs pidfd (Linux ≥ 5.3)")

IDLE_WINDOW = 3.0  # seconds over which an idle drone's wake-ups are counted
# The supervisor tick this replaced woke the drone 10 times a second: 30 in the window.
# What may remain is the odd wake of the HTTP client; far below one a tick.
IDLE_WAKES = 8


def wakes(pid: int) -> int:
    """Voluntary context switches of the drone's main thread (the event loop) so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc status")


def fd_links(pid: int) -> dict[int, str]:
    links = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            links[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
    return links


def pidfd_targets(pid: int) -> set[int]:
    """The pids the process holds a pidfd on (fdinfo says ``Pid:``)."""
    targets = set()
    for fd, link in fd_links(pid).items():
        if "pidfd" not in link:
            continue
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in info.splitlines():
            if line.startswith("Pid:"):
                targets.add(int(line.split()[1]))
    return targets


def drone_pid(drone: DroneProcess) -> int:
    assert drone.process is not None and drone.process.poll() is None
    return drone.process.pid


def idle_wakes(drone: DroneProcess) -> int:
    pid = drone_pid(drone)
    before = wakes(pid)
    time.sleep(IDLE_WINDOW)  # the measurement window itself, not a wait for a condition
    return wakes(pid) - before


def test_an_idle_drone_that_ran_tasks_does_not_wake_for_them(fleet: Fleet):
    # A long-poll longer than the window: the poll loop itself stays parked in it.
    drone = fleet.drone("d1", poll_wait=25.0)
    for _ in range(3):
        task = fleet.wait_state(fleet.submit("echo hi", drone="d1"))
        assert task["state"] == "succeeded"
    wait_until(lambda: not any((drone.data_dir / "tasks").iterdir()),
               message="the tasks' spools removed")
    # The poll answer that carried the last task is followed by one held poll: let it park.
    fleet.wait_state(fleet.submit("true", drone="d1"))
    counted = idle_wakes(drone)
    assert counted <= IDLE_WAKES, f"an idle drone woke {counted} times in {IDLE_WINDOW} s"


def test_a_readopted_tasks_exit_is_noticed_through_its_pidfd(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit("while [ ! -e go ]; do sleep 0.05; done; echo done; exit 3",
                           drone="d1")
    fleet.wait_state(task_id, "running")
    wait_until(lambda: (drone.data_dir / "tasks" / task_id / "proc.json").exists(),
               message="proc.json")
    record = json.loads((drone.data_dir / "tasks" / task_id / "proc.json").read_text())
    wrapper = record["wrapper_pid"]
    assert wrapper in pidfd_targets(drone_pid(drone))  # the launching drone watches its child
    drone.kill9()
    drone.start()
    wait_until(lambda: "re-adopted" in drone.log_text(), timeout=20, message="re-adoption")
    # The restarted drone is not the wrapper's parent; it watches it through a pidfd.
    wait_until(lambda: wrapper in pidfd_targets(drone_pid(drone)), timeout=20,
               message="a pidfd on the re-adopted wrapper")
    (drone.data_dir / "work" / task_id / "go").touch()
    task = fleet.wait_state(task_id, timeout=30)
    assert task["state"] == "failed" and task["exit_code"] == 3
    assert fleet.output(task_id) == b"done\n"
    wait_until(lambda: wrapper not in pidfd_targets(drone_pid(drone)),
               message="the pidfd closed after the exit")


# bash and its sleep ignore SIGTERM (an ignored signal stays ignored across exec): only the
# SIGKILL at the end of the grace ends this task.
STUBBORN = "trap '' TERM; echo up; while true; do sleep 0.1; done"


def test_a_timeout_that_falls_while_the_drone_is_down_is_enforced_after_its_restart(
        fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit(STUBBORN, drone="d1", timeout=3, grace=1)
    fleet.wait_state(task_id, "running")
    drone.kill9()
    kill_file = drone.data_dir / "tasks" / task_id / "kill.json"
    assert not kill_file.exists()
    drone.start()
    task = fleet.wait_state(task_id, timeout=40)
    assert task["state"] == "timed_out" and task["signal"] == 9, task
    assert "grace over, SIGKILL" in drone.log_text()


def test_a_kill_grace_begun_before_a_drone_restart_ends_in_sigkill_after_it(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit(STUBBORN, drone="d1", timeout=1, grace=4)
    kill_file = drone.data_dir / "tasks" / task_id / "kill.json"
    wait_until(lambda: kill_file.exists() and json.loads(kill_file.read_text())["term_sent"],
               timeout=20, message="the timeout's SIGTERM sent")
    drone.kill9()
    assert not json.loads(kill_file.read_text())["escalated"]
    drone.start()
    task = fleet.wait_state(task_id, timeout=40)
    assert task["state"] == "timed_out" and task["signal"] == 9, task
    assert "grace over, SIGKILL" in drone.log_text()


def test_two_hundred_tasks_leave_no_inotify_watch_or_pidfd_open(fleet: Fleet):
    drone = fleet.drone("d1", slots=8)
    pid = drone_pid(drone)
    warm = fleet.submit("echo warm", drone="d1")
    fleet.wait_state(warm)
    baseline = len(fd_links(pid))
    ids = [fleet.submit(f"echo {i}", drone="d1") for i in range(200)]
    for task_id in ids:
        assert fleet.wait_state(task_id, timeout=120)["state"] == "succeeded"
    assert fleet.output(ids[-1]) == b"199\n"
    wait_until(lambda: not any((drone.data_dir / "tasks").iterdir()), timeout=30,
               message="every spool removed")
    links = fd_links(pid)
    assert not [link for link in links.values() if "pidfd" in link], links
    # One inotify instance for the drone, and no watch left on it (fdinfo lists each watch).
    inotify = [fd for fd, link in links.items() if "inotify" in link]
    assert len(inotify) <= 1, links
    for fd in inotify:
        assert "inotify wd:" not in Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    # A few fds may come and go (the relay connections); a leak per task would be 200+.
    assert len(fd_links(pid)) <= baseline + 10
