"""What the cockpit knows about the relay, and how each update changes it.

This module is pure (no Textual, no I/O): widgets never diff relay data
themselves, they apply the typed changes returned here. That keeps the
expensive parts of a live table (which cell changed, does the sort order
move, how many unread messages) testable without a screen, and lets a
resync after a reconnect cost exactly the rows that really differ.

Relay objects are plain dicts with the field names of docs/api.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from dragoon.cockpit.formatting import format_ago
from dragoon.cockpit.safe_text import clean
from dragoon.shared.models import FINAL_STATES, TaskState

Drone = dict[str, Any]
Task = dict[str, Any]
Message = dict[str, Any]
Job = dict[str, Any]  # a JOBVIEW (docs/api.md)


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class DroneAdded:
    name: str
    drone: Drone


@dataclass(frozen=True)
class DroneUpdated:
    name: str
    drone: Drone
    changed: frozenset[str]  # top-level field names whose value differs


@dataclass(frozen=True)
class DroneRemoved:
    name: str


@dataclass(frozen=True)
class TaskAdded:
    task_id: str
    task: Task


@dataclass(frozen=True)
class TaskUpdated:
    task_id: str
    task: Task
    changed: frozenset[str]
    previous_state: str
    previous_drone: str | None


@dataclass(frozen=True)
class MessageAdded:
    message_id: int
    message: Message


@dataclass(frozen=True)
class MessageUpdated:
    message_id: int
    message: Message
    changed: frozenset[str]


@dataclass(frozen=True)
class JobChanged:
    """A job's view (JOBVIEW) was added or differs: the tree relabels its node."""

    job_id: str
    job: Job


@dataclass(frozen=True)
class UnreadChanged:
    count: int


Change = (
    DroneAdded | DroneUpdated | DroneRemoved | TaskAdded | TaskUpdated | MessageAdded
    | MessageUpdated | UnreadChanged | JobChanged
)


def _changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> frozenset[str]:
    keys = set(old) | set(new)
    return frozenset(k for k in keys if old.get(k) != new.get(k))


# --------------------------------------------------------------------------- the state


@dataclass
class CockpitState:
    """Drones, tasks and messages keyed by id, as last heard from the relay.

    Tasks are never dropped by a snapshot: the relay lists only the newest
    tasks, so a task missing from a listing is old, not gone.
    """

    drones: dict[str, Drone] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    messages: dict[int, Message] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    unread: int = 0

    # ------------------------------------------------------------------ single objects

    def upsert_drone(self, drone: Drone) -> list[Change]:
        name = str(drone["name"])
        old = self.drones.get(name)
        if old is None:
            self.drones[name] = dict(drone)
            return [DroneAdded(name, self.drones[name])]
        merged = {**old, **drone}
        changed = _changed_fields(old, merged)
        if not changed:
            return []
        self.drones[name] = merged
        return [DroneUpdated(name, merged, changed)]

    def remove_drone(self, name: str) -> list[Change]:
        if self.drones.pop(name, None) is None:
            return []
        return [DroneRemoved(name)]

    def upsert_task(self, task: Task) -> list[Change]:
        task_id = str(task["id"])
        old = self.tasks.get(task_id)
        if old is None:
            self.tasks[task_id] = dict(task)
            return [TaskAdded(task_id, self.tasks[task_id])]
        merged = {**old, **task}
        changed = _changed_fields(old, merged)
        if not changed:
            return []
        self.tasks[task_id] = merged
        return [TaskUpdated(task_id, merged, changed, str(old.get("state")), old.get("drone"))]

    def upsert_job(self, job: Job) -> list[Change]:
        job_id = str(job["id"])
        old = self.jobs.get(job_id)
        merged = {**(old or {}), **job}
        if old is not None and not _changed_fields(old, merged):
            return []
        self.jobs[job_id] = merged
        return [JobChanged(job_id, merged)]

    def job_tasks(self, job_id: str) -> list[Task]:
        """Every attempt of every trial of the job the cockpit holds."""
        return [t for t in self.tasks.values() if t.get("job") == job_id]

    def upsert_message(self, message: Message) -> list[Change]:
        message_id = int(message["id"])
        old = self.messages.get(message_id)
        changes: list[Change]
        if old is None:
            self.messages[message_id] = dict(message)
            changes = [MessageAdded(message_id, self.messages[message_id])]
        else:
            merged = {**old, **message}
            changed = _changed_fields(old, merged)
            if not changed:
                return []
            self.messages[message_id] = merged
            changes = [MessageUpdated(message_id, merged, changed)]
        return changes + self._recount_unread()

    def mark_acked(self, ids: Iterable[int]) -> list[Change]:
        """Record an acknowledgement the pilot made, before the relay echoes it."""
        changes: list[Change] = []
        for message_id in ids:
            old = self.messages.get(message_id)
            if old is not None and not old.get("acked"):
                self.messages[message_id] = {**old, "acked": True}
                changes.append(
                    MessageUpdated(message_id, self.messages[message_id], frozenset({"acked"}))
                )
        return changes + self._recount_unread()

    def _recount_unread(self) -> list[Change]:
        count = sum(1 for m in self.messages.values() if not m.get("acked"))
        if count == self.unread:
            return []
        self.unread = count
        return [UnreadChanged(count)]

    # ------------------------------------------------------------------ relay input

    def apply_snapshot(
        self,
        *,
        drones: Iterable[Drone] = (),
        tasks: Iterable[Task] = (),
        messages: Iterable[Message] = (),
        jobs: Iterable[Job] = (),
        unread_only: bool = True,
    ) -> list[Change]:
        """Bring the state in line with full listings, returning only real differences.

        Drones absent from the listing are removed (the relay lists them all).
        With `unread_only`, `messages` is the relay's unread list, so a message
        we hold as unread that is not in it has been acknowledged elsewhere.
        """
        changes: list[Change] = []
        listed = {str(d["name"]): d for d in drones}
        for name in [n for n in self.drones if n not in listed]:
            changes += self.remove_drone(name)
        for drone in listed.values():
            changes += self.upsert_drone(drone)
        for job in jobs:
            changes += self.upsert_job(job)
        for task in tasks:
            changes += self.upsert_task(task)
        listed_ids: set[int] = set()
        for message in messages:
            listed_ids.add(int(message["id"]))
            changes += self.upsert_message(message)
        if unread_only:
            gone = [i for i, m in self.messages.items()
                    if not m.get("acked") and i not in listed_ids]
            changes += self.mark_acked(gone)
        return _collapse_unread(changes)

    def apply_event(self, kind: str, data: Mapping[str, Any]) -> list[Change]:
        """Apply one server-sent event (`drone`, `task`, `message`, `job`); others are ignored."""
        if kind == "drone":
            if data.get("removed") or data.get("deleted"):
                return self.remove_drone(str(data["name"]))
            return self.upsert_drone(dict(data))
        if kind == "task":
            return self.upsert_task(dict(data))
        if kind == "message":
            return self.upsert_message(dict(data))
        if kind == "job":
            return self.upsert_job(dict(data))
        return []

    # ------------------------------------------------------------------ queries

    def tasks_of(self, drone: str | None) -> list[Task]:
        """The tasks `drone` ran or runs, newest first (Enter on a grid row goes to the first)."""
        return sorted((t for t in self.tasks.values() if t.get("drone") == drone),
                      key=lambda t: -(t.get("created_at") or 0))

    def unread_messages(self) -> list[Message]:
        return sorted(
            (m for m in self.messages.values() if not m.get("acked")),
            key=lambda m: int(m["id"]),
        )


def _collapse_unread(changes: list[Change]) -> list[Change]:
    """Keep only the last unread count of a batch, at the end: widgets need one value."""
    last: UnreadChanged | None = None
    out: list[Change] = []
    for change in changes:
        if isinstance(change, UnreadChanged):
            last = change
        else:
            out.append(change)
    if last is not None:
        out.append(last)
    return out


# --------------------------------------------------------------------------- presentation


def drone_status(drone: Mapping[str, Any], now: float) -> str:
    """The grid's state word: draining wins over online, offline says since when."""
    state = clean(drone.get("state", "pending"))
    if state == "offline":
        return f"offline {format_ago(drone.get('last_seen'), now)}"
    if drone.get("draining"):
        return "draining"
    return state


def number(value: object) -> float | None:
    """A finite number, or None: metrics are whatever JSON a drone sent, read as numbers only.

    The relay passes a drone's metrics on as they came (docs/security.md,
    "Untrusted text is data"): a string, a bool, a list or NaN where a number
    belongs shows as no value, it never stops the cockpit.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def _metrics(drone: Mapping[str, Any]) -> Mapping[str, Any]:
    metrics = drone.get("metrics")
    return metrics if isinstance(metrics, Mapping) else {}


def cpu_load(drone: Mapping[str, Any]) -> float | None:
    return number(_metrics(drone).get("cpu_percent"))


def mem_load(drone: Mapping[str, Any]) -> float | None:
    metrics = _metrics(drone)
    total, used = number(metrics.get("mem_total")), number(metrics.get("mem_used"))
    if not total or used is None:
        return None
    return 100.0 * used / total


def gpu_load(drone: Mapping[str, Any]) -> float | None:
    """Mean utilisation over the drone's GPUs; None when it has none."""
    gpus = _metrics(drone).get("gpus")
    gpus = gpus if isinstance(gpus, list) else []
    utils = [u for g in gpus if isinstance(g, Mapping) and (u := number(g.get("util"))) is not None]
    return sum(utils) / len(utils) if utils else None


def task_counts(drone: Mapping[str, Any]) -> tuple[int, int]:
    """(running, slots) of a drone, 0 for what is missing or not a number."""
    running, slots = number(drone.get("running")), number(drone.get("slots"))
    return int(running or 0), int(slots or 0)


# Columns of the drone grid, and which drone fields each one reads: a change
# to other fields never touches that cell.
DRONE_COLUMNS: Final[tuple[str, ...]] = ("name", "state", "labels", "cpu", "mem", "gpu", "tasks")
COLUMN_FIELDS: Final[dict[str, frozenset[str]]] = {
    "name": frozenset({"name"}),
    "state": frozenset({"state", "draining", "last_seen"}),
    "labels": frozenset({"labels"}),
    "cpu": frozenset({"metrics"}),
    "mem": frozenset({"metrics"}),
    "gpu": frozenset({"metrics"}),
    "tasks": frozenset({"running", "slots"}),
}


def columns_for(changed: Iterable[str]) -> list[str]:
    changed = set(changed)
    return [c for c in DRONE_COLUMNS if COLUMN_FIELDS[c] & changed]


_STATE_ORDER: Final = {"online": 0, "pending": 1, "offline": 2}


def drone_sort_key(drone: Mapping[str, Any], column: str) -> tuple[Any, ...]:
    """A key that sorts missing values last and ties by name, so the order is stable."""
    name = str(drone.get("name", ""))
    value: Any
    if column == "state":
        value = (_STATE_ORDER.get(str(drone.get("state")), 3), bool(drone.get("draining")))
    elif column == "labels":
        value = ",".join(map(str, drone.get("labels") or []))
    elif column == "cpu":
        value = cpu_load(drone)
    elif column == "mem":
        value = mem_load(drone)
    elif column == "gpu":
        value = gpu_load(drone)
    elif column == "tasks":
        value = task_counts(drone)
    else:
        value = name
    return (value is None, value if value is not None else 0, name)


def sort_key_changed(change: DroneUpdated, column: str) -> bool:
    """Whether `change` may move its drone's row when the grid is sorted on `column`."""
    return bool(COLUMN_FIELDS.get(column, frozenset({"name"})) & change.changed)


def drone_matches(drone: Mapping[str, Any], query: str) -> bool:
    """The `/` filter: every word must appear in the name, a label, or the state."""
    words = query.lower().split()
    if not words:
        return True
    hay = " ".join(
        [str(drone.get("name", "")), str(drone.get("state", "")),
         "draining" if drone.get("draining") else "", *map(str, drone.get("labels") or [])]
    ).lower()
    return all(w in hay for w in words)


def sorted_drones(
    drones: Iterable[Drone], column: str = "name", *, reverse: bool = False, query: str = ""
) -> list[Drone]:
    """The grid's rows after a `/` filter: those matching `query`, in `column` order."""
    kept = [d for d in drones if drone_matches(d, query)]
    return sorted(kept, key=lambda d: drone_sort_key(d, column), reverse=reverse)


# --------------------------------------------------------------------------- tasks

# Live states first: the pilot watches those.
STATE_ORDER: Final[tuple[str, ...]] = tuple(s.value for s in TaskState)
QUEUED_GROUP: Final = "(queued)"


def state_rank(state: str) -> int:
    """Where a state group sits in the task tree: lifecycle order, unknown states last."""
    return STATE_ORDER.index(state) if state in STATE_ORDER else len(STATE_ORDER)


def state_is_final(state: str) -> bool:
    """Whether a task in `state` is done; a state this cockpit does not know is not."""
    try:
        return TaskState(state) in FINAL_STATES
    except ValueError:
        return False


def task_is_final(task: Mapping[str, Any]) -> bool:
    return state_is_final(str(task.get("state")))


def task_elapsed(task: Mapping[str, Any], now: float) -> float | None:
    """How long the task ran: ``finished_at - started_at`` once it is final, ``now -
    started_at`` while it runs; None when it never started (queued, dispatched, or
    cancelled before its drone started it) or a final task lacks its end.

    A finished task must not tick on: its duration is the relay's two timestamps,
    never the cockpit's clock.
    """
    start = number(task.get("started_at"))
    if not start:
        return None
    if task_is_final(task):
        end = number(task.get("finished_at"))
        return max(0.0, end - start) if end else None
    return max(0.0, now - start)


def task_title(task: Mapping[str, Any], width: int = 40) -> str:
    """The name, else the command, on one line and cut to ``width``; safe text to show."""
    text = task.get("name") or (task.get("spec") or {}).get("command") or (
        "(sealed)" if task.get("sealed") else "")
    text = clean(" ".join(str(text).split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def task_group(task: Mapping[str, Any]) -> tuple[str, str]:
    """(drone group, state group) of the task tree."""
    return (str(task.get("drone") or QUEUED_GROUP), str(task.get("state", "queued")))


def wall_clock() -> float:
    return time.time()


def coalesce(changes: Iterable[Change]) -> list[Change]:
    """Fold a burst of changes into one per object, in first-seen order.

    Between two repaints a drone may report metrics several times; only its
    latest value matters, but the union of changed fields does (every column
    any of them touched must be redrawn). Removals break the fold.
    """
    out: list[Change | None] = []
    drone_at: dict[str, int] = {}
    task_at: dict[str, int] = {}
    job_at: dict[str, int] = {}
    unread: UnreadChanged | None = None
    for change in changes:
        if isinstance(change, DroneUpdated) and change.name in drone_at:
            i = drone_at[change.name]
            prev = out[i]
            if isinstance(prev, DroneAdded):
                out[i] = DroneAdded(change.name, change.drone)
            elif isinstance(prev, DroneUpdated):
                out[i] = DroneUpdated(change.name, change.drone, prev.changed | change.changed)
        elif isinstance(change, DroneAdded | DroneUpdated):
            drone_at[change.name] = len(out)
            out.append(change)
        elif isinstance(change, DroneRemoved):
            index = drone_at.pop(change.name, None)
            if index is not None and isinstance(out[index], DroneAdded):
                out[index] = None  # came and went within the burst
            else:
                out.append(change)
        elif isinstance(change, TaskUpdated) and change.task_id in task_at:
            i = task_at[change.task_id]
            prev_task = out[i]
            if isinstance(prev_task, TaskAdded):
                out[i] = TaskAdded(change.task_id, change.task)
            elif isinstance(prev_task, TaskUpdated):
                out[i] = TaskUpdated(change.task_id, change.task,
                                     prev_task.changed | change.changed,
                                     prev_task.previous_state, prev_task.previous_drone)
        elif isinstance(change, TaskAdded | TaskUpdated):
            task_at[change.task_id] = len(out)
            out.append(change)
        elif isinstance(change, UnreadChanged):
            unread = change
        elif isinstance(change, JobChanged) and change.job_id in job_at:
            out[job_at[change.job_id]] = change
        elif isinstance(change, JobChanged):
            job_at[change.job_id] = len(out)
            out.append(change)
        else:
            out.append(change)
    result = [c for c in out if c is not None]
    if unread is not None:
        result.append(unread)
    return result
