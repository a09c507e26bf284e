"""Dispatch: long-poll wake-ups, signed tasks with sequence numbers, redelivery, slots, drain,
labels, cancel delivery, offline drones, lost tasks and their recovery, queued-task expiry."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from dragoon.shared import sshsig
from dragoon.shared.canonical import canonical_task
from dragoon.shared.constants import NS_TASK
from dragoon.shared.keys import PublicKey

from tests.support.relay import DroneClient, PilotSession, RelayProcess, wait_until


class Poller:
    """A drone's long-poll on a thread, timed from its start."""

    def __init__(self, drone: DroneClient, **body: Any) -> None:
        self.answer: dict[str, Any] = {}
        self.elapsed = -1.0
        self.started = threading.Event()

        def run() -> None:
            self.started.set()
            begin = time.monotonic()
            self.answer = drone.poll(wait=20, **body).json()
            self.elapsed = time.monotonic() - begin

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.started.wait(5)

    def join(self) -> dict[str, Any]:
        self.thread.join(25)
        return self.answer


def _held(relay: RelayProcess, pilot: PilotSession, name: str) -> None:
    """Wait until the relay has seen the drone's poll (it then holds it)."""
    wait_until(lambda: any(d["name"] == name and d["state"] == "online"
                           for d in pilot.get("/v1/workers").json()["drones"]),
               message="drone online")


def test_long_poll_wakes_at_once_on_submit(
    shared_relay: RelayProcess, shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    poller = Poller(drone)
    _held(shared_relay, shared_pilot, drone.name)
    submitted_at = time.monotonic()
    task = shared_pilot.submit("echo hi", drone=drone.name)
    answer = poller.join()
    assert [t["id"] for t in answer["tasks"]] == [task["id"]]
    assert time.monotonic() - submitted_at < 2.0  # not the 20 s the poll could have waited


def test_idle_poll_is_held_until_wait_runs_out(new_drone: Callable[..., DroneClient]) -> None:
    drone = new_drone()
    begin = time.monotonic()
    answer = drone.poll(wait=1).json()
    assert answer["tasks"] == [] and time.monotonic() - begin >= 0.9


def test_task_is_signed_for_the_drone_with_increasing_seq(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone(slots=2)
    shared_pilot.submit("echo a", drone=drone.name, env={"K": "ü"})
    shared_pilot.submit("echo b", drone=drone.name)
    tasks = drone.poll().json()["tasks"]
    assert [t["seq"] for t in tasks] == [1, 2]
    key = PublicKey.from_openssh(drone.relay_public_key)
    for task in tasks:
        message = canonical_task(task_id=task["id"], drone=drone.name, seq=task["seq"],
                                 spec=task["spec"])
        sshsig.verify_b64(task["signature"], NS_TASK, message, key)
        assert task["drone"] == drone.name


def test_undelivered_task_is_handed_out_again_with_a_fresh_seq(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    task = shared_pilot.submit("echo lost answer", drone=drone.name)
    first = drone.poll().json()["tasks"]
    again = drone.poll(running=[]).json()["tasks"]  # the first answer never arrived
    assert [t["id"] for t in again] == [task["id"]]
    assert again[0]["seq"] > first[0]["seq"]
    held = drone.poll(running=[task["id"]]).json()["tasks"]
    assert held == []


def test_at_most_slots_tasks_are_handed_out(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone(slots=2)
    ids = [shared_pilot.submit(f"echo {i}", drone=drone.name)["id"] for i in range(3)]
    handed = [t["id"] for t in drone.poll().json()["tasks"]]
    assert handed == ids[:2]
    assert drone.poll(running=handed).json()["tasks"] == []
    drone.finish(handed[0])
    assert [t["id"] for t in drone.poll(running=handed[1:]).json()["tasks"]] == [ids[2]]


def test_label_target_goes_to_a_drone_with_all_labels(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    partial = new_drone(("lbl-x",))
    full = new_drone(("lbl-x", "lbl-y"))
    task = shared_pilot.submit("echo labels", labels=["lbl-x", "lbl-y"])
    assert partial.poll().json()["tasks"] == []
    assert [t["id"] for t in full.poll().json()["tasks"]] == [task["id"]]
    assert shared_pilot.get(f"/v1/tasks/{task['id']}").json()["drone"] == full.name


def test_draining_drone_takes_nothing_new(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    answer = shared_pilot.post(f"/v1/workers/{drone.name}/drain", json={"drain": True})
    assert answer.json()["draining"] is True
    task = shared_pilot.submit("echo later", drone=drone.name)
    assert drone.poll().json()["tasks"] == []
    shared_pilot.post(f"/v1/workers/{drone.name}/drain", json={"drain": False})
    assert [t["id"] for t in drone.poll().json()["tasks"]] == [task["id"]]


def test_cancel_of_a_queued_task_ends_it_at_once(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    shared_pilot.post(f"/v1/workers/{drone.name}/drain", json={"drain": True})
    task = shared_pilot.submit("echo never", drone=drone.name)
    cancelled = shared_pilot.post(f"/v1/tasks/{task['id']}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["finished_at"] is not None
    shared_pilot.post(f"/v1/workers/{drone.name}/drain", json={"drain": False})
    assert drone.poll().json()["tasks"] == []


def test_cancel_reaches_a_polling_drone_at_once(
    shared_relay: RelayProcess, shared_pilot: PilotSession,
    new_drone: Callable[..., DroneClient],
) -> None:
    drone = new_drone()
    task = shared_pilot.submit("sleep 100", drone=drone.name, grace=3)
    drone.poll()
    drone.poll(running=[task["id"]], started=[{"id": task["id"], "pid": 42}])
    poller = Poller(drone, running=[task["id"]])
    _held(shared_relay, shared_pilot, drone.name)
    shown = shared_pilot.post(f"/v1/tasks/{task['id']}/cancel", json={"grace": 5}).json()
    assert shown["state"] == "running" and shown["cancel_requested"] is True
    answer = poller.join()
    assert [{k: c[k] for k in ("id", "grace")} for c in answer["cancel"]] == [
        {"id": task["id"], "grace": 5}]
    assert '"kind":"cancel"' in answer["cancel"][0]["order"]  # the pilot's, signed
    assert poller.elapsed < 5
    drone.finish(task["id"], "cancelled", signal=15)
    assert shared_pilot.get(f"/v1/tasks/{task['id']}").json()["state"] == "cancelled"


def test_timestamps_follow_the_lifecycle(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    task = shared_pilot.submit("true", drone=drone.name)
    drone.poll()
    assert shared_pilot.get(f"/v1/tasks/{task['id']}").json()["state"] == "dispatched"
    drone.poll(running=[task["id"]], started=[{"id": task["id"], "started_at": time.time()}])
    running = shared_pilot.get(f"/v1/tasks/{task['id']}").json()
    assert running["state"] == "running"
    drone.finish(task["id"], cpu_seconds=0.5, peak_rss=1234)
    done = shared_pilot.get(f"/v1/tasks/{task['id']}").json()
    assert done["state"] == "succeeded" and done["exit_code"] == 0
    assert done["created_at"] <= done["dispatched_at"] <= done["started_at"] <= done["finished_at"]
    assert (done["cpu_seconds"], done["peak_rss"]) == (0.5, 1234)


def test_rejected_task_fails_with_the_reason(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    task = shared_pilot.submit("true", drone=drone.name)
    drone.poll()
    reason = "bad_task_signature: sequence 1 is not above 9"
    drone.poll(rejected=[{"id": task["id"], "reason": reason}])
    shown = shared_pilot.get(f"/v1/tasks/{task['id']}").json()
    assert (shown["state"], shown["error"]) == ("failed", reason)


def test_list_filters_and_pages(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    ids = [shared_pilot.submit(f"echo {i}", drone=drone.name)["id"] for i in range(3)]
    page = shared_pilot.get("/v1/tasks", params={"drone": drone.name, "limit": 2}).json()
    assert [t["id"] for t in page["tasks"]] == ids[::-1][:2]
    rest = shared_pilot.get("/v1/tasks", params={"drone": drone.name, "limit": 2,
                                                 "before": page["next"]}).json()
    assert [t["id"] for t in rest["tasks"]] == [ids[0]] and rest["next"] is None
    queued = shared_pilot.get("/v1/tasks", params={"drone": drone.name,
                                                   "state": "queued"}).json()["tasks"]
    assert len(queued) == 3


@pytest.fixture(scope="module")
def fast_relay(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("fast")
    with RelayProcess(root / "data", config={"sweep_interval": 0.1, "offline_after": 1}) as r:
        yield r


def test_silent_drone_goes_offline(fast_relay: RelayProcess) -> None:
    pilot = fast_relay.pilot("ops")
    drone = fast_relay.drone("quiet")
    drone.poll()
    states = lambda: {d["name"]: d["state"] for d in pilot.get("/v1/workers").json()["drones"]}  # noqa: E731
    assert states()["quiet"] == "online"
    wait_until(lambda: states()["quiet"] == "offline", timeout=5, message="offline")


def test_running_task_is_lost_after_its_grace_and_restored_by_a_report(
    fast_relay: RelayProcess,
) -> None:
    pilot = fast_relay.pilot("ops2")
    drone = fast_relay.drone("flaky")
    task = pilot.submit("sleep 1000", drone="flaky", lost_after=1)
    drone.poll()
    drone.poll(running=[task["id"]], started=[{"id": task["id"]}])
    show = lambda: pilot.get(f"/v1/tasks/{task['id']}").json()  # noqa: E731
    wait_until(lambda: show()["state"] == "lost", timeout=6, message="lost")
    drone.finish(task["id"], "failed", exit_code=3)
    restored = show()
    assert (restored["state"], restored["exit_code"], restored["error"]) == ("failed", 3, None)


def test_expired_queued_task_is_never_run(fast_relay: RelayProcess) -> None:
    pilot = fast_relay.pilot("ops3")
    drone = fast_relay.drone("late")
    task = pilot.submit("echo too late", drone="late", expires_in=0.5)
    show = lambda: pilot.get(f"/v1/tasks/{task['id']}").json()  # noqa: E731
    wait_until(lambda: show()["state"] == "cancelled", timeout=5, message="expiry")
    assert "expired" in show()["error"]
    assert drone.poll().json()["tasks"] == []
