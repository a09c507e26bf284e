"""The pure snapshot/event → changes module of the cockpit."""

from __future__ import annotations

from typing import Any

from dragoon.cockpit.app.state import (
    CockpitState,
    DroneAdded,
    DroneRemoved,
    DroneUpdated,
    MessageAdded,
    MessageUpdated,
    TaskAdded,
    TaskUpdated,
    UnreadChanged,
    coalesce,
    columns_for,
    drone_matches,
    drone_status,
    gpu_load,
    mem_load,
    sort_key_changed,
    sorted_drones,
    task_elapsed,
    task_title,
)
from dragoon.cockpit.formatting import format_ago, format_duration


def drone(name: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": name, "state": "online", "draining": False, "labels": [],
                            "slots": 1, "running": 0, "last_seen": 100.0, "metrics": None}
    return base | kw


def task(task_id: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": task_id, "name": None, "state": "queued", "drone": None,
                            "spec": {"command": "true"}, "created_at": 1.0,
                            "started_at": None, "finished_at": None, "exit_code": None}
    return base | kw


def message(mid: int, acked: bool = False) -> dict[str, Any]:
    return {"id": mid, "task": "t-1", "drone": "a", "text": f"m{mid}", "created_at": 1.0,
            "acked": acked}


def test_first_snapshot_adds_everything_and_counts_unread() -> None:
    state = CockpitState()
    changes = state.apply_snapshot(drones=[drone("a"), drone("b")], tasks=[task("t-1")],
                                   messages=[message(1), message(2)])
    kinds = [type(c) for c in changes]
    assert kinds.count(DroneAdded) == 2
    assert kinds.count(TaskAdded) == 1
    assert kinds.count(MessageAdded) == 2
    assert changes[-1] == UnreadChanged(2)
    assert kinds.count(UnreadChanged) == 1


def test_identical_snapshot_yields_no_change() -> None:
    state = CockpitState()
    snap = {"drones": [drone("a")], "tasks": [task("t-1")], "messages": [message(1)]}
    state.apply_snapshot(**snap)
    assert state.apply_snapshot(**snap) == []


def test_resync_reports_only_the_differences() -> None:
    state = CockpitState()
    state.apply_snapshot(drones=[drone("a"), drone("b")], tasks=[task("t-1")])
    changes = state.apply_snapshot(
        drones=[drone("a", running=1), drone("c")], tasks=[task("t-1", state="running")]
    )
    assert DroneRemoved("b") in changes
    assert any(isinstance(c, DroneAdded) and c.name == "c" for c in changes)
    updated = [c for c in changes if isinstance(c, DroneUpdated)]
    assert [(c.name, c.changed) for c in updated] == [("a", frozenset({"running"}))]
    task_changes = [c for c in changes if isinstance(c, TaskUpdated)]
    assert task_changes[0].previous_state == "queued"
    assert task_changes[0].changed == frozenset({"state"})


def test_snapshot_keeps_tasks_the_listing_no_longer_shows() -> None:
    state = CockpitState()
    state.apply_snapshot(tasks=[task("t-old")])
    state.apply_snapshot(tasks=[task("t-new")])
    assert set(state.tasks) == {"t-old", "t-new"}


def test_metrics_event_changes_only_metric_columns() -> None:
    state = CockpitState()
    state.apply_event("drone", drone("a"))
    changes = state.apply_event("drone", drone("a", metrics={"cpu_percent": 50.0}))
    assert len(changes) == 1
    assert isinstance(changes[0], DroneUpdated)
    assert columns_for(changes[0].changed) == ["cpu", "mem", "gpu"]
    assert not sort_key_changed(changes[0], "name")
    assert sort_key_changed(changes[0], "cpu")


def test_duplicate_event_is_a_no_op() -> None:
    state = CockpitState()
    state.apply_event("task", task("t-1", state="running"))
    assert state.apply_event("task", task("t-1", state="running")) == []


def test_unknown_event_kind_is_ignored() -> None:
    assert CockpitState().apply_event("ping", {"x": 1}) == []


def test_message_event_raises_unread_and_ack_lowers_it() -> None:
    state = CockpitState()
    assert state.apply_event("message", message(5)) == [
        MessageAdded(5, message(5)), UnreadChanged(1)
    ]
    changes = state.mark_acked([5])
    assert isinstance(changes[0], MessageUpdated)
    assert changes[-1] == UnreadChanged(0)
    assert state.unread_messages() == []


def test_message_acked_elsewhere_disappears_on_resync() -> None:
    state = CockpitState()
    state.apply_snapshot(messages=[message(1), message(2)])
    changes = state.apply_snapshot(messages=[message(2)])
    assert changes[-1] == UnreadChanged(1)
    assert [m["id"] for m in state.unread_messages()] == [2]


def test_relative_times_are_short_and_use_the_given_clock() -> None:
    assert format_ago(None, 10) == "never"
    assert format_ago(95.0, 100.0) == "5s"
    assert format_duration(125) == "2m05s"
    assert format_duration(3 * 3600 + 120) == "3h02m"
    assert format_duration(2 * 86400 + 3600) == "2d01h"
    assert format_ago(200.0, 100.0) == "0s"  # clock skew never shows negative


def test_drone_status_words() -> None:
    assert drone_status(drone("a"), 0) == "online"
    assert drone_status(drone("a", draining=True), 0) == "draining"
    assert drone_status(drone("a", state="offline", last_seen=40.0), 100.0) == "offline 1m00s"


def test_loads_from_metrics() -> None:
    d = drone("a", metrics={"mem_total": 200, "mem_used": 50,
                            "gpus": [{"util": 90}, {"util": 10}]})
    assert mem_load(d) == 25.0
    assert gpu_load(d) == 50.0
    assert gpu_load(drone("b")) is None


def test_sort_puts_missing_values_last_and_filter_matches_labels() -> None:
    drones = [drone("a", metrics={"cpu_percent": 10}), drone("b"),
              drone("c", metrics={"cpu_percent": 90}, labels=["gpu"])]
    assert [d["name"] for d in sorted_drones(drones, "cpu")] == ["a", "c", "b"]
    assert [d["name"] for d in sorted_drones(drones, "name", reverse=True)] == ["c", "b", "a"]
    assert [d["name"] for d in sorted_drones(drones, query="gpu")] == ["c"]
    assert drone_matches(drone("x", draining=True), "drain")
    assert not drone_matches(drone("x"), "gpu")


def test_a_drones_tasks_come_newest_first() -> None:
    state = CockpitState()
    state.apply_snapshot(tasks=[task("t-1", drone="a", created_at=1.0),
                                task("t-2", drone="b", created_at=2.0),
                                task("t-3", drone="a", created_at=3.0)])
    assert [t["id"] for t in state.tasks_of("a")] == ["t-3", "t-1"]
    assert state.tasks_of("c") == []


def test_elapsed_runs_on_until_finished() -> None:
    running = task("t-1", state="running", started_at=100.0)
    assert task_elapsed(running, 130.0) == 30.0
    done = running | {"state": "succeeded", "finished_at": 110.0}
    assert task_elapsed(done, 500.0) == 10.0
    assert task_elapsed(task("t-2"), 500.0) is None


def test_a_finished_task_shows_its_duration_never_the_clock() -> None:
    """finished_at - started_at, whatever the time now; no start or no end: no duration."""
    done = task("t-1", state="failed", started_at=100.0, finished_at=400.0)
    assert task_elapsed(done, 10_000.0) == 300.0
    dispatched = task("t-2", state="dispatched", dispatched_at=100.0)
    assert task_elapsed(dispatched, 500.0) is None
    cancelled_early = task("t-3", state="cancelled", dispatched_at=100.0, finished_at=120.0)
    assert task_elapsed(cancelled_early, 500.0) is None
    lost_without_end = task("t-4", state="lost", started_at=100.0)
    assert task_elapsed(lost_without_end, 500.0) is None


def test_task_title_prefers_name_and_truncates_command() -> None:
    assert task_title(task("t", name="sweep")) == "sweep"
    long = task("t", spec={"command": "python  train.py " + "x" * 60})
    title = task_title(long, 20)
    assert len(title) == 20 and title.endswith("…") and "  " not in title


def test_coalesce_folds_a_burst_per_drone_and_unions_fields() -> None:
    state = CockpitState()
    changes = state.apply_event("drone", drone("a"))
    changes += state.apply_event("drone", drone("b"))
    state_b = state.apply_event("drone", drone("b", running=1))
    state_b += state.apply_event("drone", drone("b", running=1, metrics={"cpu_percent": 3}))
    folded = coalesce(changes + state_b)
    assert [type(c) for c in folded] == [DroneAdded, DroneAdded]
    assert folded[1].drone["metrics"] == {"cpu_percent": 3}
    updates = coalesce(state_b)
    assert len(updates) == 1
    assert isinstance(updates[0], DroneUpdated)
    assert updates[0].changed == frozenset({"running", "metrics"})


def test_coalesce_keeps_the_first_previous_state_of_a_task() -> None:
    state = CockpitState()
    state.apply_event("task", task("t-1"))
    burst = state.apply_event("task", task("t-1", state="dispatched", drone="a"))
    burst += state.apply_event("task", task("t-1", state="running", drone="a"))
    (folded,) = coalesce(burst)
    assert isinstance(folded, TaskUpdated)
    assert (folded.previous_state, folded.previous_drone) == ("queued", None)
    assert folded.task["state"] == "running"


def test_coalesce_drops_a_drone_added_and_removed_in_one_burst() -> None:
    state = CockpitState()
    burst = state.apply_event("drone", drone("a")) + state.remove_drone("a")
    assert coalesce(burst) == []
