"""The job store: jobs, their trials and spares; views with counts; retries and stops.

A job is a set of ordinary tasks under one client-chosen id (docs/jobs.md). Each task of
one is an *attempt* of a *trial*. The relay cannot retry on its own (a drone refuses an
order id it has seen), so a retry is a *spare*: an attempt the pilot sealed and signed up
front, held in ``job_spares`` until ``settle`` turns it into a queued task.

``settle(conn, task_id)`` is the one function every place that makes a task final calls,
inside the same transaction: with the unique index on (job, trial, attempt) a retry is
inserted at most once, and a crash between the two is impossible (one commit). What
changed is also queued on ``NEWS`` for the event loop to publish (``drain_news``).
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

from dragoon.relay import audit
from dragoon.relay import tasks as task_store
from dragoon.relay.db import Connection, Row, transaction
from dragoon.relay.errors import ApiError, not_found
from dragoon.relay.models import JobBody, TrialBody
from dragoon.shared.jobs import check_job_id
from dragoon.shared.orders import Order
from dragoon.shared.spec import SpecError

FINAL: Final = ("succeeded", "failed", "timed_out", "cancelled", "lost")
FAILED: Final = ("failed", "timed_out", "lost")
COUNTS: Final = ("queued", "running", "succeeded", "failed", "cancelled")
_COUNT_OF: Final = {"queued": "queued", "dispatched": "running", "running": "running",
                    "succeeded": "succeeded", "failed": "failed", "timed_out": "failed",
                    "lost": "failed", "cancelled": "cancelled"}

# (job id, task ids new or changed, drones to wake), appended on the database thread after
# a settle, drained on the event loop after the commit (relay/routes/jobs.py publish_news).
# deque append/popleft are atomic; a rolled-back settle leaves a harmless extra re-read.
NEWS: collections.deque[tuple[str, list[str], list[str]]] = collections.deque()


@dataclass
class CheckedTrial:
    """One trial body with its checked order and spare orders."""

    body: TrialBody
    order: Order
    spares: list[Order] = field(default_factory=list)


def row_of(conn: Connection, job_id: str) -> Row | None:
    row: Row | None = conn.execute(
        "SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return row


def _own_job(conn: Connection, who: str, job_id: str, doing: str) -> Row:
    """The job's row when ``who`` is its pilot: 404 when there is no such job, 403
    ``not_your_job`` when it is another pilot's (only a job's pilot may change it)."""
    job = row_of(conn, job_id)
    if job is None:
        raise not_found("job")
    if job["pilot"] != who:
        raise ApiError(403, "not_your_job", f"job {job_id} is {job['pilot']}'s; only "
                       f"its pilot may {doing}")
    return job


def _latest(conn: Connection, job_id: str) -> list[Row]:
    """Each trial's latest attempt."""
    return conn.execute(
        "SELECT t.* FROM tasks t WHERE t.job_id = ? AND t.attempt = (SELECT MAX(u.attempt)"
        " FROM tasks u WHERE u.job_id = t.job_id AND u.trial = t.trial) ORDER BY t.trial",
        (job_id,)).fetchall()


def _retry_due(conn: Connection, job: Row, task: Row) -> bool:
    """Whether ``task`` (final) should be followed by its spare: it ended lost, or failed
    with an exit code in ``retry_on``; the job runs on; a spare for the next attempt waits."""
    if job["cancel_requested"] or job["stopped"]:
        return False
    retry_on = json.loads(job["retry_on"])
    if not (task["state"] == "lost"
            or (task["state"] == "failed" and task["exit_code"] in retry_on)):
        return False
    # A spare whose order id a task of the pilot's has taken since is no retry: the drone
    # would refuse it as a replay, and the unique (pilot, order_id) index its insert.
    return conn.execute(
        "SELECT 1 FROM job_spares s WHERE s.job_id = ? AND s.trial = ? AND s.attempt = ?"
        " AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.pilot = ? AND t.order_id = s.order_id)",
        (job["id"], task["trial"], task["attempt"] + 1, job["pilot"])).fetchone() is not None


def view(conn: Connection, job: Row) -> dict[str, Any]:
    """The job as the API shows it (docs/api.md, JOBVIEW): counts over latest attempts."""
    counts = dict.fromkeys(COUNTS, 0)
    due = False
    for task in _latest(conn, job["id"]):
        if task["state"] in FINAL and _retry_due(conn, job, task):
            counts["queued"] += 1
            due = True
            continue
        counts[_COUNT_OF[task["state"]]] += 1
    return {
        "id": job["id"], "name": job["name"], "kind": job["kind"], "pilot": job["pilot"],
        "state": _state(job, counts, due), "created_at": job["created_at"],
        "finished_at": job["finished_at"], "trials": job["trials"],
        "max_parallel": job["max_parallel"], "retries": job["retries"],
        "retry_on": json.loads(job["retry_on"]),
        "stop_on_failure": bool(job["stop_on_failure"]),
        "cancel_requested": bool(job["cancel_requested"]), "stopped": job["stopped"],
        "counts": counts,
    }


def _state(job: Row, counts: dict[str, int], due: bool) -> str:
    if counts["queued"] or counts["running"] or due:
        return "running"
    if job["cancel_requested"]:
        return "cancelled"
    total = sum(counts.values())
    if counts["succeeded"] == total:
        return "succeeded"
    if counts["succeeded"] == 0:
        return "failed"
    return "partly_failed"


def get(conn: Connection, job_id: str) -> dict[str, Any]:
    job = row_of(conn, job_id)
    if job is None:
        raise not_found("job")
    return view(conn, job)


def listing(conn: Connection, *, limit: int, before: str | None) -> dict[str, Any]:
    """A page of jobs, newest first."""
    anchor = None
    if before:
        found = conn.execute("SELECT num FROM jobs WHERE id = ?", (before,)).fetchone()
        if found is None:
            raise not_found("job (before)")
        anchor = found["num"]
    rows = conn.execute(
        "SELECT * FROM jobs WHERE num < ? ORDER BY num DESC LIMIT ?",
        (anchor if anchor is not None else 1 << 62, limit + 1)).fetchall()
    jobs = [view(conn, row) for row in rows[:limit]]
    return {"jobs": jobs, "next": jobs[-1]["id"] if len(rows) > limit else None}


def checked_job_id(job_id: str) -> str:
    try:
        return check_job_id(job_id)
    except SpecError as exc:
        raise ApiError(422, "invalid", str(exc)) from None


def check_trials(trials: list[CheckedTrial], retries: int) -> None:
    """The rules across a request's trials: distinct trial numbers and order ids, at most
    ``retries`` spares each, every spare the same task as its trial's order."""
    seen_trials: set[int] = set()
    seen_orders: set[str] = set()
    for item in trials:
        number = item.body.trial
        if number in seen_trials:
            raise ApiError(422, "invalid", f"trial {number} appears twice in the request")
        seen_trials.add(number)
        if len(item.spares) > retries:
            raise ApiError(422, "invalid", f"trial {number} has {len(item.spares)} spares; "
                           f"the job allows {retries} retries")
        task_store.check_trial(item.body, item.order)
        for spare, body in zip(item.spares, item.body.spares, strict=True):
            for name in ("target", "spec_sha256", "recipients"):
                if spare.fields.get(name) != item.order.fields.get(name):
                    raise ApiError(400, "order_mismatch", f"trial {number}: a spare's order "
                                   f"has another {name} than the trial's")
            from dragoon.relay import orders as relay_orders

            relay_orders.same(spare, "payload_sha256", task_store.payload_sha256(body.payload),
                              f"trial {number} spare's payload hash")
        for order in (item.order, *item.spares):
            if order.id in seen_orders:
                raise ApiError(400, "order_mismatch", f"trial {number}: order id {order.id} "
                               "is used twice (the drone refuses a reused order id)")
            seen_orders.add(order.id)


def create(conn: Connection, store: task_store.TaskStore, pilot: str, body: JobBody,
           trials: list[CheckedTrial]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Create the job with its first trials, all or nothing: (job view, task ids, wake)."""
    job_id = checked_job_id(body.id)
    check_trials(trials, body.retries)
    now = time.time()
    with transaction(conn):
        earlier = row_of(conn, job_id)
        if earlier is not None:
            ids = _made_before(conn, pilot, earlier, trials)
            if ids is None:
                raise ApiError(409, "job_exists", f"job {job_id} exists already")
            return view(conn, earlier), ids, []  # this very request, sent again
        conn.execute(
            "INSERT INTO jobs (id, name, kind, pilot, created_at, trials, max_parallel,"
            " retries, retry_on, stop_on_failure) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (job_id, body.name, body.kind, pilot, now, body.max_parallel, body.retries,
             json.dumps(sorted(set(body.retry_on))), int(body.stop_on_failure)))
        ids, wake = _add(conn, store, pilot, job_id, trials, now)
        audit.record(conn, pilot, "job", job_id, f"{body.kind}, {len(ids)} trial(s)", at=now)
        job = row_of(conn, job_id)
    assert job is not None
    return view(conn, job), ids, wake


def add(conn: Connection, store: task_store.TaskStore, pilot: str, job_id: str,
        trials: list[CheckedTrial]) -> tuple[dict[str, Any], list[str], list[str]]:
    """More trials (a chunk of a big sweep), or a new attempt of a trial that has ended
    (``dragoon job retry``): only the job's own pilot may add."""
    now = time.time()
    with transaction(conn):
        job = _own_job(conn, pilot, job_id, "add trials")
        if job["cancel_requested"]:
            raise ApiError(409, "job_cancelled", f"job {job_id} is cancelled")
        check_trials(trials, job["retries"])
        ids, wake = _add(conn, store, pilot, job_id, trials, now)
        # The pilot asks for more work: a stop or an end is over.
        conn.execute("UPDATE jobs SET stopped = NULL, finished_at = NULL WHERE id = ?",
                     (job_id,))
        job = row_of(conn, job_id)
    assert job is not None
    return view(conn, job), ids, wake


def _made_before(conn: Connection, pilot: str, job: Row,
                 trials: list[CheckedTrial]) -> list[str] | None:
    """The task ids a job create made, when ``trials`` are its trials sent again (its answer
    was lost): the pilot's job, each order already one of its tasks; else None."""
    if job["pilot"] != pilot:
        return None
    ids = []
    for item in trials:
        row = task_store.made_by(conn, pilot, item.order)
        if row is None or row["job_id"] != job["id"] or row["trial"] != item.body.trial:
            return None
        ids.append(row["id"])
    return ids


def _resent(conn: Connection, pilot: str, job_id: str, item: CheckedTrial) -> str | None:
    """The task id of a trial this pilot sent already under the same order (a chunk sent
    again after its answer was lost), or None for a new one; an order id that is another
    task's, or a spare's that is a task's already, is refused (the drone would refuse it)."""
    row = task_store.made_by(conn, pilot, item.order)
    if row is not None and row["job_id"] == job_id and row["trial"] == item.body.trial:
        return str(row["id"])
    if row is not None:
        raise ApiError(409, "order_reused", f"trial {item.body.trial}: order id "
                       f"{item.order.id} is task {row['id']}'s already")
    for spare in item.spares:
        used = task_store.made_by(conn, pilot, spare)
        if used is not None:
            raise ApiError(409, "order_reused", f"trial {item.body.trial}: the spare's "
                           f"order id {spare.id} is task {used['id']}'s already")
    return None


def _add(conn: Connection, store: task_store.TaskStore, pilot: str, job_id: str,
         trials: list[CheckedTrial], now: float) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    wake: list[str] = []
    new: list[CheckedTrial] = []
    for item in trials:
        earlier = _resent(conn, pilot, job_id, item)
        if earlier is not None:
            ids.append(earlier)
        else:
            new.append(item)
    task_store.check_quota(conn, store.config, pilot, len(new))
    for item in new:
        number = item.body.trial
        last = conn.execute(
            "SELECT state, attempt FROM tasks WHERE job_id = ? AND trial = ?"
            " ORDER BY attempt DESC LIMIT 1", (job_id, number)).fetchone()
        attempt = 0
        if last is not None:
            if last["state"] not in FINAL:
                raise ApiError(409, "trial_active", f"trial {number} of {job_id} is "
                               f"{last['state']}: a new attempt waits for it to end")
            attempt = last["attempt"] + 1
            conn.execute("DELETE FROM job_spares WHERE job_id = ? AND trial = ?",
                         (job_id, number))
        task_id, drones = store.insert(conn, pilot, item.body, item.order, now,
                                       job=(job_id, number, attempt))
        for offset, (spare, body) in enumerate(
                zip(item.spares, item.body.spares, strict=True), start=1):
            conn.execute(
                "INSERT INTO job_spares (job_id, trial, attempt, order_id, order_text,"
                " order_signature, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, number, attempt + offset, spare.id, spare.text, body.order_signature,
                 body.payload))
        ids.append(task_id)
        wake.extend(d for d in drones if d not in wake)
    count = conn.execute("SELECT COUNT(DISTINCT trial) FROM tasks WHERE job_id = ?",
                         (job_id,)).fetchone()[0]
    conn.execute("UPDATE jobs SET trials = ? WHERE id = ?", (count, job_id))
    return ids, wake


def cancel_queued(conn: Connection, job_id: str, error: str, now: float) -> list[str]:
    """Cancel every queued trial of the job and drop its spares; the ids cancelled."""
    ids = [r["id"] for r in conn.execute(
        "SELECT id FROM tasks WHERE job_id = ? AND state = 'queued' ORDER BY num", (job_id,))]
    conn.execute(
        "UPDATE tasks SET state = 'cancelled', finished_at = ?, cancel_requested = 1,"
        " error = ? WHERE job_id = ? AND state = 'queued'", (now, error, job_id))
    conn.execute("DELETE FROM job_spares WHERE job_id = ?", (job_id,))
    return ids


def request_cancel(conn: Connection, pilot: str, job_id: str,
                   listed: list[str]) -> list[str]:
    """Mark the job cancelled, cancel its queued trials and drop spares, in one
    transaction; every ``listed`` task must be one of the job's. The ids cancelled."""
    now = time.time()
    with transaction(conn):
        _own_job(conn, pilot, job_id, "cancel it")
        for task_id in listed:
            row = conn.execute("SELECT job_id FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None or row["job_id"] != job_id:
                raise ApiError(422, "invalid", f"task {task_id} is not a trial of {job_id}")
        conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        ids = cancel_queued(conn, job_id, "cancelled with its job", now)
        audit.record(conn, pilot, "cancel", job_id, f"{len(ids)} queued trial(s)", at=now)
        _mark_final(conn, job_id, now)
    NEWS.append((job_id, ids, []))
    return ids


def settle(conn: Connection, task_id: str) -> str | None:
    """After ``task_id`` became final, in the caller's transaction: its retry from a
    spare, or the job's stop, and the job's end. The new task's id, if one was queued."""
    task = task_store.row_of(conn, task_id)
    if task is None or task["job_id"] is None or task["state"] not in FINAL:
        return None
    job = row_of(conn, task["job_id"])
    if job is None:
        return None
    now = time.time()
    newer = conn.execute("SELECT 1 FROM tasks WHERE job_id = ? AND trial = ? AND attempt > ?",
                         (job["id"], task["trial"], task["attempt"])).fetchone()
    new_id = None
    changed: list[str] = [task_id]
    wake: list[str] = []
    if newer is None and _retry_due(conn, job, task):
        new_id, wake = _retry(conn, job, task, now)
        changed.append(new_id)
    elif (newer is None and task["state"] in FAILED and job["stop_on_failure"]
          and not job["stopped"] and not job["cancel_requested"]):
        how = (f"exit {task['exit_code']}" if task["exit_code"] is not None
               else task["state"])
        why = f"trial {task['trial']} failed on {task['drone'] or '?'} ({how})"
        conn.execute("UPDATE jobs SET stopped = ? WHERE id = ?", (why, job["id"]))
        changed.extend(cancel_queued(conn, job["id"], f"job stopped: {why}", now))
    _mark_final(conn, job["id"], now)
    NEWS.append((job["id"], changed, wake))
    return new_id


def _retry(conn: Connection, job: Row, task: Row,
           now: float) -> tuple[str, list[str]]:
    """The spare of the next attempt as a queued task; the unique index forbids a second."""
    attempt = task["attempt"] + 1
    spare = conn.execute("SELECT * FROM job_spares WHERE job_id = ? AND trial = ? AND"
                         " attempt = ?", (job["id"], task["trial"], attempt)).fetchone()
    new_id = task_store.new_id()
    target = json.loads(task["target"])
    by_name = target.get("drone")
    conn.execute(
        "INSERT INTO tasks (id, name, state, drone, target, spec, pilot, created_at,"
        " expires_at, lost_after, start_by, order_id, order_text, order_signature,"
        " payload, wraps, job_id, trial, attempt)"
        " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
        (new_id, task["name"], by_name, task["target"], task["spec"], task["pilot"], now,
         now + max(task["expires_at"] - task["created_at"], 60.0), task["lost_after"],
         spare["order_id"], spare["order_text"], spare["order_signature"], spare["payload"],
         task["wraps"], job["id"], task["trial"], attempt))
    conn.execute("DELETE FROM job_spares WHERE job_id = ? AND trial = ? AND attempt = ?",
                 (job["id"], task["trial"], attempt))
    wake = [by_name] if by_name else task_store.drones_for(conn, target.get("labels") or [])
    return new_id, wake


def _mark_final(conn: Connection, job_id: str, now: float) -> None:
    job = row_of(conn, job_id)
    if job is None or job["finished_at"] is not None:
        return
    if view(conn, job)["state"] != "running":
        conn.execute("UPDATE jobs SET finished_at = ? WHERE id = ?", (now, job_id))


def came_back(conn: Connection, task_id: str) -> list[str]:
    """A ``lost`` task its drone reports running again: its retry, if still queued, goes
    back to being a spare (it never ran), so the trial is this attempt again; a retry
    already handed out runs too (docs/jobs.md). The ids put back."""
    task = task_store.row_of(conn, task_id)
    if task is None or task["job_id"] is None:
        return []
    rows = conn.execute(
        "SELECT * FROM tasks WHERE job_id = ? AND trial = ? AND attempt > ?"
        " AND state = 'queued'", (task["job_id"], task["trial"], task["attempt"])).fetchall()
    for other in rows:
        conn.execute(
            "INSERT INTO job_spares (job_id, trial, attempt, order_id, order_text,"
            " order_signature, payload) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (other["job_id"], other["trial"], other["attempt"], other["order_id"],
             other["order_text"], other["order_signature"], other["payload"]))
        conn.execute("DELETE FROM tasks WHERE id = ?", (other["id"],))
    conn.execute("UPDATE jobs SET finished_at = NULL WHERE id = ?", (task["job_id"],))
    ids = [r["id"] for r in rows]
    NEWS.append((task["job_id"], [task_id], []))
    return ids


def settle_all(conn: Connection) -> int:
    """At relay start: settle every unfinished job's final latest attempts again, so a
    retry or an end a crash left undone is done (the unique index keeps it once)."""
    done = 0
    with transaction(conn):
        for job in conn.execute("SELECT id FROM jobs WHERE finished_at IS NULL").fetchall():
            for task in _latest(conn, job["id"]):
                if task["state"] in FINAL and settle(conn, task["id"]) is not None:
                    done += 1
            _mark_final(conn, job["id"], time.time())
    return done


def drain_news() -> list[tuple[str, list[str], list[str]]]:
    out = []
    while NEWS:
        out.append(NEWS.popleft())
    return out
