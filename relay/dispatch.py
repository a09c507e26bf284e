"""Dispatch: the drone's long-poll, carrying the heartbeat in and signed work out.

``POST /v1/worker/poll`` is answered at once when the drone has something new
(a task, a cancel, a fetch), else held until a wake-up on the drone's signal
(``("drone", name)``, raised after a submit, cancel, fetch or drain commits)
or until ``wait`` runs out. There is no polling loop: the handler sleeps on
the signal.

One assignment pass, in one transaction: record the heartbeat and the drone's
reports; hand out again any dispatched task the drone does not hold (the
previous answer was lost); fill free slots from the queue, oldest first,
unless draining; each task handed out gets the next per-drone sequence
number and an RE-TASK-V1 signature.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

from dragoon.relay import fetches, fleet, held, jobs, waiting
from dragoon.relay import tasks as task_store
from dragoon.relay.auth import require_current
from dragoon.relay.context import Relay
from dragoon.relay.db import Connection, Row, transaction
from dragoon.relay.job_news import publish_news
from dragoon.relay.models import PollBody
from dragoon.relay.tasks import TaskStore
from dragoon.shared.signers import Signer
from dragoon.shared.spec import duration_text
from dragoon.shared.task_auth import task_envelope


@dataclass
class Assignment:
    answer: dict[str, Any]
    news: bool
    drone: dict[str, Any] | None = None
    came_online: bool = False
    changed: list[dict[str, Any]] = field(default_factory=list)
    dispatched: list[str] = field(default_factory=list)  # queued tasks handed out just now
    failed_fetches: list[str] = field(default_factory=list)


def assign(
    conn: Connection, signer: Signer, tasks: TaskStore, name: str, poll: PollBody,
    first: bool, fingerprint: str | None = None,
) -> Assignment:
    """One pass for one drone's poll, in one transaction (see the module docstring)."""
    now = time.time()
    with transaction(conn):
        if fingerprint is not None:
            require_current(conn, name, fingerprint)  # replaced while this poll was held?
        drone, labels = _heartbeat(conn, name, poll, now)
        changed_ids = _apply_reports(conn, name, poll, now) if first else set()
        failed_fetches = _fail_fetches(conn, name, poll) if first else []
        handout = _Handout(conn, signer, name, drone["fingerprint"], now, drone["seq"])
        _redeliver(handout, set(poll.running) | {s.id for s in poll.started})
        dispatched: list[str] = []
        if not drone["draining"]:
            dispatched = _fill_slots(handout, labels, poll.slots or drone["slots"])
        changed_ids.update(dispatched)
        if drone["state"] != "online":  # back: its queued tasks wait for another reason now
            changed_ids.update(waiting.queued_for(conn, name))
        conn.execute("UPDATE drones SET seq = ? WHERE name = ?", (handout.seq, name))
        cancels, fetch_rows, undelivered = _outstanding(conn, name)
        fresh = conn.execute("SELECT * FROM drones WHERE name = ?", (name,)).fetchone()
        rows = [task_store.row_of(conn, task_id) for task_id in sorted(changed_ids)]
        changed = [tasks.view(conn, row) for row in rows if row is not None]
        active = _active(conn, name)
    answer = {
        "tasks": handout.tasks,
        "cancel": [{"id": r["id"], "grace": int(r["cancel_grace"] or 0),
                    "order": r["cancel_order"], "order_signature": r["cancel_signature"]}
                   for r in cancels],
        "fetches": [{"id": r["id"], "order": r["order_text"],
                     "order_signature": r["order_signature"], "payload": r["payload"],
                     "wrap": json.loads(r["wraps"] or "{}").get(drone["fingerprint"])}
                    for r in fetch_rows],
        "server_time": time.time(),
    }
    return Assignment(answer, bool(handout.tasks) or undelivered, fleet.view(fresh, active),
                      drone["state"] != "online", changed, dispatched, failed_fetches)


def _active(conn: Connection, name: str) -> int:
    return int(conn.execute(
        "SELECT COUNT(*) FROM tasks WHERE drone = ? AND state IN ('dispatched', 'running')",
        (name,),
    ).fetchone()[0])


def _heartbeat(
    conn: Connection, name: str, poll: PollBody, now: float
) -> tuple[Row, list[str]]:
    """Record that the drone is alive, its metrics and what it says about itself."""
    drone = conn.execute("SELECT * FROM drones WHERE name = ?", (name,)).fetchone()
    labels = json.loads(drone["labels"])
    if poll.labels is not None:
        labels = sorted(set(labels) | set(poll.labels))
    conn.execute(
        "UPDATE drones SET state = 'online', last_seen = ?, metrics = COALESCE(?, metrics),"
        " labels = ?, slots = COALESCE(?, slots), hostname = COALESCE(?, hostname),"
        " version = COALESCE(?, version) WHERE name = ?",
        (now, json.dumps(poll.metrics) if poll.metrics is not None else None,
         json.dumps(labels), poll.slots, poll.hostname, poll.version, name),
    )
    return drone, labels


@dataclass
class _Handout:
    """Tasks handed out in one answer, each with the drone's next sequence number."""

    conn: Connection
    signer: Signer
    name: str
    fingerprint: str  # the drone's key: its wrap of each task's key is the one handed out
    now: float
    seq: int
    tasks: list[dict[str, Any]] = field(default_factory=list)

    def give(self, row: Row) -> None:
        self.seq += 1
        task_id = row["id"]
        spec = json.loads(row["spec"])
        self.conn.execute(
            "UPDATE tasks SET state = 'dispatched', drone = ?, seq = ?,"
            " dispatched_at = COALESCE(dispatched_at, ?) WHERE id = ?",
            (self.name, self.seq, self.now, task_id),
        )
        envelope = task_envelope(self.signer, task_id=task_id, drone=self.name, seq=self.seq,
                                 spec=spec)
        # The pilot's signed order rides beside the relay's envelope, which does not cover
        # it: the drone checks it under its own authorized_pilots (shared/orders.py).
        envelope["order"] = row["order_text"]
        envelope["order_signature"] = row["order_signature"]
        # The sealed spec, and the task key wrapped to this drone's key (shared/e2e.py): the
        # drone opens both and believes them only as far as the order's hashes say.
        envelope["payload"] = row["payload"]
        envelope["wrap"] = json.loads(row["wraps"] or "{}").get(self.fingerprint)
        self.tasks.append(envelope)


# The columns a handed-out task is made of.
_HANDED = "id, spec, order_text, order_signature, payload, wraps"


def _redeliver(handout: _Handout, held: set[str]) -> None:
    """Dispatched tasks the drone does not hold: the answer that carried them was lost."""
    for row in handout.conn.execute(
        f"SELECT {_HANDED} FROM tasks WHERE drone = ?"  # noqa: S608 - a constant
        " AND state = 'dispatched' ORDER BY num", (handout.name,),
    ).fetchall():
        if row["id"] not in held:
            handout.give(row)


_PAGE: Final = 64  # candidates read at once from one group


class _Group:
    """Queued tasks of one job (or of no job) this drone may take, read in pages by num."""

    def __init__(self, handout: _Handout, labels: list[str], job: Row | None,
                 active: int) -> None:
        self.handout, self.labels, self.job, self.active = handout, labels, job, active
        self.after = 0
        self.rows: list[Row] = []
        self.done = False

    def head(self) -> Row | None:
        """The next candidate, or None when the group has none for this drone."""
        while not self.rows and not self.done:
            self._page()
        return self.rows[0] if self.rows else None

    def _page(self) -> None:
        h = self.handout
        which, args = (("job_id = ?", (self.job["id"],)) if self.job is not None
                       else ("job_id IS NULL", ()))
        rows = h.conn.execute(
            f"SELECT num, target, {_HANDED} FROM tasks"  # noqa: S608 - constants
            f" WHERE {which} AND state = 'queued' AND num > ?"
            " AND (drone = ? OR drone IS NULL) AND expires_at > ?"
            " AND (start_by IS NULL OR start_by > ?) ORDER BY num LIMIT ?",
            (*args, self.after, h.name, h.now, h.now, _PAGE),
        ).fetchall()
        if len(rows) < _PAGE:
            self.done = True
        if rows:
            self.after = rows[-1]["num"]
        for row in rows:
            target = json.loads(row["target"])
            if "labels" in target and not task_store.labels_match(target["labels"],
                                                                  self.labels):
                continue
            self.rows.append(row)

    def key(self, row: Row) -> tuple[int, int, int]:
        """(active tasks of its job, job num, task num); a task of no job: a group of its
        own with none active, before the jobs that tie with it (docs/jobs.md)."""
        if self.job is None:
            return (0, 0, row["num"])
        return (self.active, self.job["num"], row["num"])

    def open(self) -> bool:
        limit = self.job["max_parallel"] if self.job is not None else None
        return limit is None or self.active < limit


def _fill_slots(handout: _Handout, labels: list[str], slots: int) -> list[str]:
    """Queued tasks for this drone (by name or labels), fairly across jobs, up to its free
    slots: each slot goes to the candidate with the smallest (active tasks of its job, job
    num, task num); jobs at max_parallel, stopped or cancelled wait (docs/jobs.md,
    "Placement"). One indexed query per group with queued work, not a scan of the queue."""
    conn = handout.conn
    free = slots - _active(conn, handout.name)
    given: list[str] = []
    if free <= 0:
        return given
    groups = [_Group(handout, labels, None, 0)]
    for job in conn.execute(
        "SELECT j.*, (SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.id"
        " AND t.state IN ('dispatched', 'running')) AS active FROM jobs j"
        " WHERE j.finished_at IS NULL AND j.stopped IS NULL AND j.cancel_requested = 0"
        " AND EXISTS (SELECT 1 FROM tasks q WHERE q.job_id = j.id AND q.state = 'queued')"
        " ORDER BY j.num"
    ).fetchall():
        groups.append(_Group(handout, labels, job, job["active"]))
    while len(given) < free:
        best: tuple[tuple[int, int, int], _Group, Row] | None = None
        for group in groups:
            if not group.open() or (row := group.head()) is None:
                continue
            key = group.key(row)
            if best is None or key < best[0]:
                best = (key, group, row)
        if best is None:
            return given
        _, group, row = best
        group.rows.pop(0)
        group.active += 1
        handout.give(row)
        given.append(row["id"])
    return given


def _outstanding(
    conn: Connection, name: str
) -> tuple[list[Row], list[Row], bool]:
    """Every cancel and fetch still open for the drone, and whether any is new to it."""
    cancels = conn.execute(
        "SELECT id, cancel_grace, cancel_delivered, cancel_order, cancel_signature"
        " FROM tasks WHERE drone = ?"
        " AND state IN ('dispatched', 'running') AND cancel_requested = 1", (name,),
    ).fetchall()
    fetch_rows = conn.execute(
        "SELECT id, delivered, order_text, order_signature, payload, wraps FROM fetches"
        " WHERE drone = ? AND state = 'pending'"
        " ORDER BY created_at", (name,),
    ).fetchall()
    undelivered = any(not r["cancel_delivered"] for r in cancels) or any(
        not r["delivered"] for r in fetch_rows
    )
    conn.execute(
        "UPDATE tasks SET cancel_delivered = 1 WHERE drone = ? AND cancel_requested = 1"
        " AND state IN ('dispatched', 'running')", (name,),
    )
    conn.execute("UPDATE fetches SET delivered = 1 WHERE drone = ? AND state = 'pending'",
                 (name,))
    return cancels, fetch_rows, undelivered


def _apply_reports(conn: Connection, name: str, poll: PollBody, now: float) -> set[str]:
    changed: set[str] = set()
    for started in poll.started:
        cur = conn.execute(
            "UPDATE tasks SET state = 'running', started_at = COALESCE(?, ?), pid = ?"
            " WHERE id = ? AND drone = ? AND state IN ('dispatched', 'lost')",
            (started.started_at, now, started.pid, started.id, name),
        )
        if cur.rowcount:
            changed.add(started.id)
    # A task the drone still runs after it was declared lost is running again.
    for task_id in poll.running:
        cur = conn.execute(
            "UPDATE tasks SET state = 'running', error = NULL WHERE id = ? AND drone = ?"
            " AND state = 'lost'", (task_id, name),
        )
        if cur.rowcount:
            changed.add(task_id)
            jobs.came_back(conn, task_id)
    for refused in poll.refused_cancels:  # the task runs on; the pilot reads why
        cur = conn.execute(
            "UPDATE tasks SET cancel_requested = 0, cancel_order = NULL, cancel_signature = NULL,"
            " cancel_refused = ? WHERE id = ? AND drone = ? AND state IN ('dispatched', 'running')",
            (refused.reason, refused.id, name),
        )
        if cur.rowcount:
            changed.add(refused.id)
    for rejected in poll.rejected:
        cur = conn.execute(
            "UPDATE tasks SET state = 'failed', error = ?, finished_at = ?"
            " WHERE id = ? AND drone = ? AND state IN ('dispatched', 'running')",
            (rejected.reason, now, rejected.id, name),
        )
        if cur.rowcount:
            changed.add(rejected.id)
            task_store.settle_each(conn, [rejected.id])
    return changed


def _fail_fetches(conn: Connection, name: str, poll: PollBody) -> list[str]:
    """Fetches the drone refused; their held ``GET /v1/fetches/{id}?wait`` must wake."""
    return [e.id for e in poll.fetch_errors if fetches.fail(conn, name, e.id, e.error)]


async def poll(relay: Relay, name: str, body: PollBody,
               fingerprint: str | None = None) -> dict[str, Any]:
    """The long-poll: assign, and if nothing is new, sleep on the drone's signal and retry.

    ``fingerprint`` is the key the poll was verified with; every pass checks that it
    still holds the name (docs/security.md, "Re-enrollment").
    """
    key = ("drone", name)
    wait = max(0.0, min(body.wait, relay.config.poll_max_wait))
    deadline = time.monotonic() + wait
    first = True
    while True:
        version = relay.signals.version(key)
        result = await relay.db.run(assign, relay.signer, relay.tasks, name, body, first,
                                    fingerprint)
        publish(relay, result, metrics=first)
        await publish_news(relay)
        first = False
        remaining = deadline - time.monotonic()
        if result.news or remaining <= 0:
            return result.answer
        # No caller check while held: each pass of ``assign`` checks the poll's key
        # still holds the name, in the transaction that would hand work out.
        if not await held.wait(relay, None, key, version, remaining):
            return result.answer


def publish(relay: Relay, result: Assignment, *, metrics: bool) -> None:
    if result.drone is not None and (metrics or result.came_online):
        relay.bus.publish("drone", result.drone)
    for fetch_id in result.failed_fetches:
        relay.signals.notify(("fetch", fetch_id))
    for task in result.changed:
        relay.bus.publish("task", task)
        relay.signals.notify(("task", task["id"]))
        if task["id"] in result.dispatched and (hook := relay.hooks.get("task_dispatched")):
            hook(task)  # relay/metrics/: dispatch latency of a queued task handed out now


def sweep_tasks(
    conn: Connection, tasks: TaskStore, offline_after: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drones silent too long go offline; their running tasks go ``lost`` after each task's
    grace; queued tasks past their expiry are cancelled without ever running."""
    now = time.time()
    with transaction(conn):
        gone = [r["name"] for r in conn.execute(
            "SELECT name FROM drones WHERE state = 'online' AND last_seen < ?",
            (now - offline_after,),
        )]
        for name in gone:
            conn.execute("UPDATE drones SET state = 'offline' WHERE name = ?", (name,))
        lost = [r["id"] for r in conn.execute(
            "SELECT t.id FROM tasks t JOIN drones d ON d.name = t.drone"
            " WHERE t.state IN ('dispatched', 'running')"
            " AND COALESCE(d.last_seen, t.dispatched_at) < ? - t.lost_after", (now,),
        )]
        for task_id in lost:
            conn.execute(
                "UPDATE tasks SET state = 'lost', finished_at = ?,"
                " error = 'lost: the drone went silent' WHERE id = ?", (now, task_id),
            )
        task_store.settle_each(conn, lost)
        expired = [r["id"] for r in conn.execute(
            "SELECT id FROM tasks WHERE state = 'queued' AND expires_at <= ?", (now,)
        )]
        for task_id in expired:
            conn.execute(
                "UPDATE tasks SET state = 'cancelled', finished_at = ?,"
                " error = 'expired: still queued at its expiry, never run' WHERE id = ?",
                (now, task_id),
            )
        task_store.settle_each(conn, expired)
        late = _cancel_late(conn, now)
    drone_views = [d for d in (fleet.get(conn, name) for name in gone) if d is not None]
    # Their queued tasks now wait on an offline drone: say so (bounded, relay/waiting.py).
    waiting_anew = [t for name in gone for t in waiting.queued_for(conn, name)]
    task_views = [tasks.get(conn, t) for t in dict.fromkeys(lost + expired + late + waiting_anew)]
    return drone_views, task_views


#: The sweeper waits on this key (relay/signals.py): a submit with a start deadline wakes it.
START_DEADLINES: Final = ("start-deadlines",)


def next_start_deadline(conn: Connection) -> float | None:
    """The soonest ``start_by`` of a queued task (epoch seconds), or None: the sweeper wakes
    then, not a sweep later, so ``--start-within 10s`` fails at 10 s rather than 15."""
    row = conn.execute(
        "SELECT MIN(start_by) FROM tasks WHERE state = 'queued' AND start_by IS NOT NULL"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _cancel_late(conn: Connection, now: float) -> list[str]:
    """Queued tasks past their start deadline: cancelled, with why they never started.

    Enforced here, not by the pilot's CLI, so the deadline holds when nobody watches;
    dispatch never hands out a task past it either (``_fill_slots``).
    """
    late = []
    for row in conn.execute(
        "SELECT * FROM tasks WHERE state = 'queued' AND start_by IS NOT NULL AND start_by <= ?",
        (now,),
    ).fetchall():
        why = waiting.of_task(conn, row)
        within = duration_text(max(1, round(row["start_by"] - row["created_at"])))
        error = f"not started within {within}" + (f": {waiting.summary(why)}" if why else "")
        conn.execute(
            "UPDATE tasks SET state = 'cancelled', finished_at = ?, error = ? WHERE id = ?",
            (now, error, row["id"]),
        )
        late.append(row["id"])
        task_store.settle_each(conn, [row["id"]])
    return late


async def sweep(relay: Relay) -> None:
    drones, changed = await relay.db.run(sweep_tasks, relay.tasks, relay.config.offline_after)
    for drone in drones:
        relay.bus.publish("drone", drone)
    for task in changed:
        relay.bus.publish("task", task)
        relay.signals.notify(("task", task["id"]))
    await publish_news(relay)
