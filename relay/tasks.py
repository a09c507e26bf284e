"""The task store: submit, list, show, cancel, and the drone's reports (start, reject, finish).

Every method runs on the database thread, makes its change in one
transaction and returns what changed, so the route can publish events and
wake waiters after the commit. A task's view carries its output sizes, so
the store is made once with the relay's output store and limits
(``Relay.tasks``) rather than handed them on every call.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from dragoon.relay import audit, waiting
from dragoon.relay import orders as relay_orders
from dragoon.relay.config import RelayConfig
from dragoon.relay.db import Connection, Row, transaction
from dragoon.relay.enroll import check_labels
from dragoon.relay.errors import ApiError, not_found
from dragoon.relay.models import FinishBody, SubmitBody
from dragoon.relay.output import OutputStore
from dragoon.shared.canonical import sha256_hex, spec_sha256
from dragoon.shared.models import TaskState
from dragoon.shared.orders import Order
from dragoon.shared.spec import TASK_ID_ALPHABET, TASK_ID_LENGTH

ACTIVE = ("dispatched", "running")
# Final for good: the drone can add nothing (docs/security.md, "Finished is final").
# `lost` is not among them: the drone's late report replaces it.
FINISHED = ("succeeded", "failed", "timed_out", "cancelled")


def new_id() -> str:
    return "t-" + "".join(secrets.choice(TASK_ID_ALPHABET) for _ in range(TASK_ID_LENGTH))


def row_of(conn: Connection, task_id: str) -> Row | None:
    row: Row | None = conn.execute(
        "SELECT * FROM tasks WHERE id = ?", (task_id,)
    ).fetchone()
    return row


def labels_match(wanted: list[str], have: list[str]) -> bool:
    return set(wanted) <= set(have)


def own_task(conn: Connection, drone: str, task_id: str) -> Row:
    """The task if it was handed to this drone; 404 otherwise (a drone sees only its own).

    One answer for a task that does not exist, is another drone's, or was
    never handed out (queued, or cancelled while queued for this drone by
    name), so a drone learns no task id it was not given.
    """
    row = row_of(conn, task_id)
    if row is None or row["drone"] != drone or row["dispatched_at"] is None:
        raise not_found("task for this drone")
    return row


def task_finished(row: Row, what: str, **extra: Any) -> ApiError:
    """The answer to anything new for a finished task: its outcome is recorded, the log closed."""
    return ApiError(409, "task_finished", f"task {row['id']} has finished ({row['state']}); "
                    f"{what}", state=row["state"], **extra)


def same_outcome(row: Row, body: FinishBody) -> bool:
    """A finish that repeats the recorded one (the drone lost the answer): state and exit."""
    return (row["state"], row["exit_code"], row["signal"]) == (
        body.state, body.exit_code, body.signal)


def lose_drone_tasks(conn: Connection, drone: str, reason: str, now: float) -> list[str]:
    """End the drone's dispatched and running tasks as ``lost``; their ids, oldest first.

    Called inside the caller's transaction (a replacement swaps the key in the
    same one), so no poll sees the new key with the old drone's work still
    handed out: a dispatched task would otherwise be handed again to whichever
    drone holds the name next and run twice. Queued tasks are left alone.
    """
    ids = [row["id"] for row in conn.execute(
        "SELECT id FROM tasks WHERE drone = ? AND state IN ('dispatched', 'running')"
        " ORDER BY num", (drone,),
    )]
    conn.execute(
        "UPDATE tasks SET state = 'lost', finished_at = ?, error = ?"
        " WHERE drone = ? AND state IN ('dispatched', 'running')", (now, reason, drone),
    )
    settle_each(conn, ids)
    return ids


def settle_each(conn: Connection, task_ids: list[str]) -> None:
    """``jobs.settle`` for each task just made final, in the caller's transaction."""
    from dragoon.relay import jobs  # relay/jobs.py imports this module

    for task_id in task_ids:
        jobs.settle(conn, task_id)


@dataclass
class Submitted:
    task: dict[str, Any]
    wake: list[str] = field(default_factory=list)  # drones that may take it now


@dataclass
class Changed:
    task: dict[str, Any]
    wake: str | None = None  # the drone to wake, if any


def payload_sha256(payload: str | None) -> str:
    """The hash the order signs of the sealed payload: of its bytes, not their base64."""
    if payload is None:
        raise ApiError(400, "payload_missing", "the task has no sealed payload (upgrade the "
                       "client: specs travel sealed to the drone)")
    try:
        return sha256_hex(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid", "payload is not base64") from None


def target_of(body: SubmitBody) -> dict[str, Any]:
    """The body's one target as stored and signed: ``{"drone": …}`` or ``{"labels": …}``."""
    if (body.drone is None) == (body.labels is None):
        raise ApiError(422, "invalid", "give exactly one target: drone or labels")
    if body.drone is not None:
        return {"drone": body.drone}
    return {"labels": check_labels(body.labels or [])}


def check_trial(body: SubmitBody, order: Order) -> None:
    """The one check of a task body against its (read, signer-checked) order: the spec,
    payload and target it signs are the body's. A submit and every trial of a job pass it."""
    target = target_of(body)
    relay_orders.same(order, "spec_sha256", spec_sha256(body.spec.wire()), "spec hash")
    relay_orders.same(order, "payload_sha256", payload_sha256(body.payload), "payload hash")
    relay_orders.same(order, "target", target, "target")


def made_by(conn: Connection, pilot: str, order: Order) -> Row | None:
    """The task ``pilot``'s ``order`` already made, if any: a submit sent again after its
    answer was lost (a replica killed, a timeout) is answered with that task, never queued
    twice (docs/api.md, "Sending a submit again"). The same order id under another order's
    text is a 409: an order id names one order."""
    row = conn.execute("SELECT * FROM tasks WHERE pilot = ? AND order_id = ?",
                       (pilot, order.id)).fetchone()
    if row is not None and row["order_text"] != order.text:
        raise ApiError(409, "order_reused", f"order id {order.id} is task {row['id']}'s "
                       "already, under another order (sign a new order for a new task)")
    return row


def check_quota(conn: Connection, config: RelayConfig, pilot: str, adding: int) -> None:
    """429 when ``adding`` more queued tasks would pass the pilot's queue quota."""
    queued = conn.execute(
        "SELECT COUNT(*) FROM tasks WHERE pilot = ? AND state = 'queued'", (pilot,)
    ).fetchone()[0]
    if queued + adding > config.queued_per_pilot:
        raise ApiError(
            429, "quota_exceeded",
            f"you already have {queued} queued tasks (limit {config.queued_per_pilot})",
        )


def drones_for(conn: Connection, labels: list[str]) -> list[str]:
    """The undrained drones with all ``labels``: whom a submit for them wakes."""
    return [row["name"] for row in conn.execute("SELECT name, labels FROM drones"
                                                " WHERE draining = 0")
            if labels_match(labels, json.loads(row["labels"]))]


class TaskStore:
    """The tasks table, bound to the output store its views read sizes from and to the limits."""

    def __init__(self, config: RelayConfig, output: OutputStore) -> None:
        self.config = config
        self.output = output

    def view(self, conn: Connection, row: Row,
             fleet: waiting.FleetSnapshot | None = None,
             sizes: dict[str, object] | None = None) -> dict[str, Any]:
        """The task as the API shows it; a queued one says why it waits (relay/waiting.py).

        ``sizes``: its output sizes when the caller read them already (a listing reads a
        page's in one call: ``OutputStore.sizes_of``)."""
        spec = json.loads(row["spec"])
        return {
            "id": row["id"], "name": row["name"], "state": row["state"], "drone": row["drone"],
            "target": json.loads(row["target"]), "spec": spec, "pilot": row["pilot"],
            "created_at": row["created_at"], "dispatched_at": row["dispatched_at"],
            "started_at": row["started_at"], "finished_at": row["finished_at"],
            "expires_at": row["expires_at"], "lost_after": row["lost_after"],
            "exit_code": row["exit_code"], "signal": row["signal"],
            "cpu_seconds": row["cpu_seconds"], "peak_rss": row["peak_rss"],
            "cancel_requested": bool(row["cancel_requested"]), "error": row["error"],
            "pruned_at": row["pruned_at"],  # retention dropped its output, logs and artifacts
            "notes": json.loads(row["notes"]) if row["notes"] else [],
            "start_by": row["start_by"], "waiting": waiting.of_task(conn, row, fleet),
            "order_id": row["order_id"],  # the pilot's signed order it runs under
            # What a pilot opens the task with (shared/sealed_task.py): the order and its
            # signature, the sealed spec, and the task key's wraps by recipient.
            "order": row["order_text"], "order_signature": row["order_signature"],
            "payload": row["payload"], "wraps": json.loads(row["wraps"] or "{}"),
            "cancel_refused": row["cancel_refused"],  # the drone's reason, if it refused one
            "job": row["job_id"], "trial": row["trial"], "attempt": row["attempt"],
            **(self.output.sizes(row["id"]) if sizes is None else sizes),
        }

    def get(self, conn: Connection, task_id: str) -> dict[str, Any]:
        row = row_of(conn, task_id)
        if row is None:
            raise not_found("task")
        return self.view(conn, row)

    def submit(self, conn: Connection, pilot: str, body: SubmitBody,
               order: Order) -> Submitted:
        """Queue the task with its pilot's order, once the order says what the body says.

        ``order`` has been read and its signer checked (relay/orders.py); here: the spec it
        signs is the spec stored, and its target the body's (``check_trial``, the one check
        a job's trials pass too).
        """
        check_trial(body, order)
        now = time.time()
        with transaction(conn):
            earlier = made_by(conn, pilot, order)
            if earlier is not None:
                return Submitted(self.view(conn, earlier))
            check_quota(conn, self.config, pilot, 1)
            task_id, wake = self.insert(conn, pilot, body, order, now)
            audit.record(conn, pilot, "submit", task_id,
                         json.dumps(target_of(body)), at=now)
            row = row_of(conn, task_id)
        assert row is not None
        return Submitted(self.view(conn, row), wake)

    def insert(self, conn: Connection, pilot: str, body: SubmitBody, order: Order,
               now: float, *, job: tuple[str, int, int] | None = None) -> tuple[str, list[str]]:
        """Insert one queued task (inside the caller's transaction), of ``job`` = (id,
        trial, attempt) if given; its id and the drones that may take it now."""
        config = self.config
        target = target_of(body)
        wake: list[str] = []
        if body.drone is not None:
            if conn.execute("SELECT 1 FROM drones WHERE name = ?", (body.drone,)).fetchone() \
                    is None:
                raise not_found("drone")
            wake.append(body.drone)
        else:
            wake = drones_for(conn, target["labels"])
        task_id = new_id()
        spec = body.spec.wire()
        start_by = None if body.start_within is None else now + body.start_within
        job_id, trial, attempt = job if job is not None else (None, None, None)
        conn.execute(
            "INSERT INTO tasks (id, name, state, drone, target, spec, pilot, created_at,"
            " expires_at, lost_after, start_by, order_id, order_text, order_signature,"
            " payload, wraps, job_id, trial, attempt)"
            " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, spec.get("name"), body.drone, json.dumps(target), json.dumps(spec),
             pilot, now, now + (body.expires_in or config.task_expires_in),
             body.lost_after or config.task_lost_after, start_by, order.id, order.text,
             body.order_signature, body.payload, json.dumps(body.wraps),
             job_id, trial, attempt),
        )
        return task_id, wake

    def listing(
        self, conn: Connection, *, drone: str | None, state: str | None,
        limit: int, before: str | None, id_prefix: str | None = None,
        job: str | None = None,
    ) -> dict[str, Any]:
        """A page of tasks, newest first; ``id_prefix`` (checked by the route) narrows it to
        the ids that start with it, which is how a pilot's short id is resolved."""
        where, args = [], []  # type: ignore[var-annotated]
        if id_prefix:
            # Ids hold only [a-z2-7-], so the prefix has no LIKE wildcard to escape; the range
            # form keeps the primary-key index usable.
            where.append("id >= ? AND id < ?")
            args.extend([id_prefix, id_prefix + "\x7f"])
        if job:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job,)).fetchone() is None:
                raise not_found("job")
            where.append("job_id = ?")
            args.append(job)
        if drone:
            # A name no drone holds (nor ever ran a task here) is a typo, not an empty page.
            known = conn.execute("SELECT 1 FROM drones WHERE name = ? UNION ALL "
                                 "SELECT 1 FROM tasks WHERE drone = ? LIMIT 1",
                                 (drone, drone)).fetchone()
            if known is None:
                raise not_found("drone")
            where.append("drone = ?")
            args.append(drone)
        if state:
            states = [s for s in state.split(",") if s]
            bad = [s for s in states if s not in TaskState.__members__.values()]
            if bad:
                raise ApiError(422, "invalid", f"unknown state {bad[0]!r}")
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if before:
            anchor = conn.execute("SELECT num FROM tasks WHERE id = ?", (before,)).fetchone()
            if anchor is None:
                raise not_found("task (before)")
            where.append("num < ?")
            args.append(anchor["num"])
        # Only fixed column names and placeholders are joined here; values travel as parameters.
        sql = "SELECT * FROM tasks" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608
        rows = conn.execute(sql + " ORDER BY num DESC LIMIT ?", (*args, limit + 1)).fetchall()
        fleet = (waiting.FleetSnapshot.read(conn)
                 if any(row["state"] == "queued" for row in rows) else None)
        page = rows[:limit]
        sizes = self.output.sizes_of([row["id"] for row in page])
        tasks = [self.view(conn, row, fleet, sizes[row["id"]]) for row in page]
        return {"tasks": tasks, "next": tasks[-1]["id"] if len(rows) > limit else None}

    def cancel(
        self, conn: Connection, task_id: str, grace: int | None, pilot: str,
        order: Order | None = None, signature: str | None = None,
    ) -> Changed:
        """Cancel: a queued task here and now; a handed-out one through its drone, which
        obeys only the pilot's signed cancel order (``order``, checked for its signer by
        the route), so one is required then and must name this task's order."""
        now = time.time()
        with transaction(conn):
            row = row_of(conn, task_id)
            if row is None:
                raise not_found("task")
            if order is not None:
                relay_orders.same(order, "task_order", row["order_id"], "task order")
            elif row["state"] in ACTIVE:
                raise ApiError(400, relay_orders.ERR_MISSING,
                               f"task {task_id} is on drone {row['drone']}: cancelling it "
                               "needs the pilot's signed cancel order (upgrade the client)")
            wake = None
            if row["state"] == "queued":
                conn.execute(
                    "UPDATE tasks SET state = 'cancelled', finished_at = ?, cancel_requested = 1"
                    " WHERE id = ?", (now, task_id),
                )
                settle_each(conn, [task_id])
            elif row["state"] in ACTIVE:
                spec_grace = json.loads(row["spec"]).get("grace", 10)
                conn.execute(
                    "UPDATE tasks SET cancel_requested = 1, cancel_grace = ?,"
                    " cancel_delivered = 0, cancel_order = ?, cancel_signature = ?,"
                    " cancel_refused = NULL WHERE id = ?",
                    (spec_grace if grace is None else grace,
                     order.text if order is not None else None, signature, task_id),
                )
                wake = row["drone"]
            else:
                return Changed(self.view(conn, row))  # already final: nothing to do
            audit.record(conn, pilot, "cancel", task_id, row["state"], at=now)
            new = row_of(conn, task_id)
        assert new is not None
        return Changed(self.view(conn, new), wake)

    def recorded_finish(
        self, conn: Connection, drone: str, body: FinishBody
    ) -> dict[str, Any] | None:
        """Before the log is closed: the answer to a repeated finish, or None for a new one.

        The same outcome again is acknowledged; another one is 409
        ``task_finished`` — the first report stands.
        """
        row = own_task(conn, drone, body.task)
        if row["state"] not in FINISHED:
            return None
        if same_outcome(row, body):
            return {"ok": True, "state": row["state"], "changed": None}
        raise task_finished(row, "another outcome is refused")

    def finish(
        self, conn: Connection, drone: str, body: FinishBody
    ) -> dict[str, Any]:
        """Record the outcome once its log is closed; a report replaces ``lost``.

        The state is read again in the transaction: of two finishes racing, the
        first to commit stands and the other is judged against it.
        """
        with transaction(conn):
            row = own_task(conn, drone, body.task)
            if row["state"] in FINISHED:
                if same_outcome(row, body):
                    return {"ok": True, "state": row["state"], "changed": None}
                raise task_finished(row, "another outcome is refused")
            now = time.time()
            conn.execute(
                "UPDATE tasks SET state = ?, exit_code = ?, signal = ?, cpu_seconds = ?,"
                " peak_rss = ?, started_at = COALESCE(started_at, ?, ?), finished_at = ?,"
                " error = COALESCE(?, CASE WHEN state = 'lost' THEN NULL ELSE error END),"
                " notes = ? WHERE id = ?",
                (body.state, body.exit_code, body.signal, body.cpu_seconds, body.peak_rss,
                 body.started_at, row["dispatched_at"], body.finished_at or now, body.error,
                 json.dumps(body.notes) if body.notes else None, body.task),
            )
            settle_each(conn, [body.task])
            new = row_of(conn, body.task)
        assert new is not None
        return {"ok": True, "state": body.state, "changed": self.view(conn, new)}
