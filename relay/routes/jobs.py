"""``/v1/jobs``: create a job with its trials, add trials, list, show, cancel (docs/api.md).

Every trial's order is checked as a submit's is (relay/orders.py for the signer,
relay/tasks.py ``check_trial`` for what it signs), and each spare's as a task order of
the same spec, target and recipients. Any logged-in pilot may read a job; only its own
pilot may add trials or cancel it.
"""

from __future__ import annotations

from typing import Any

from dragoon.relay import jobs, logconf
from dragoon.relay import orders as relay_orders
from dragoon.relay.auth import PilotDep
from dragoon.relay.context import Relay, RelayDep
from dragoon.relay.errors import ApiError
from dragoon.relay.job_news import publish_news
from dragoon.relay.models import JobBody, JobCancelBody, JobTasksBody, TrialBody
from fastapi import APIRouter, Query

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _checked(trials: list[TrialBody], fingerprint: str) -> list[jobs.CheckedTrial]:
    """Each trial's order and spares read and their signer checked, before any storing."""
    out = []
    for body in trials:
        if (body.drone is None) == (body.labels is None):
            raise ApiError(422, "invalid", f"trial {body.trial}: give exactly one target: "
                           "drone or labels")
        order = relay_orders.check(body.order, body.order_signature, kind="task",
                                   fingerprint=fingerprint)
        spares = [relay_orders.check(s.order, s.order_signature, kind="task",
                                     fingerprint=fingerprint) for s in body.spares]
        out.append(jobs.CheckedTrial(body, order, spares))
    return out


async def _announce(relay: Relay, job: dict[str, Any], task_ids: list[str],
                    wake: list[str]) -> list[dict[str, Any]]:
    views: list[dict[str, Any]] = await relay.db.run(
        lambda conn: [relay.tasks.get(conn, t) for t in task_ids])
    for task in views:
        relay.bus.publish("task", task)
    relay.bus.publish("job", job)
    for drone in wake:
        relay.signals.notify(("drone", drone))
    return views


@router.post("", status_code=201)
async def create(body: JobBody, who: PilotDep, relay: RelayDep) -> dict[str, Any]:
    jobs.checked_job_id(body.id)
    trials = _checked(body.tasks, who.fingerprint)
    job, ids, wake = await relay.db.run(jobs.create, relay.tasks, who.name, body, trials)
    logconf.event("job", job=job["id"], pilot=who.name, trials=len(ids))
    return {"job": job, "tasks": await _announce(relay, job, ids, wake)}


@router.post("/{job_id}/tasks", status_code=201)
async def add_tasks(job_id: str, body: JobTasksBody, who: PilotDep,
                    relay: RelayDep) -> dict[str, Any]:
    trials = _checked(body.tasks, who.fingerprint)
    job, ids, wake = await relay.db.run(jobs.add, relay.tasks, who.name, job_id, trials)
    return {"job": job, "tasks": await _announce(relay, job, ids, wake)}


@router.get("")
async def list_jobs(_who: PilotDep, relay: RelayDep, limit: int = Query(100, ge=1, le=1000),
                    before: str | None = Query(None)) -> dict[str, Any]:
    return await relay.db.run(lambda conn: jobs.listing(conn, limit=limit, before=before))


@router.get("/{job_id}")
async def show(job_id: str, _who: PilotDep, relay: RelayDep) -> dict[str, Any]:
    return await relay.db.run(jobs.get, job_id)


@router.post("/{job_id}/cancel")
async def cancel(job_id: str, who: PilotDep, relay: RelayDep,
                 body: JobCancelBody | None = None) -> dict[str, Any]:
    """Queued trials and spares at once; each listed active trial by its signed order."""
    body = body or JobCancelBody()
    checked = []
    for item in body.cancels:  # every order checked before anything changes
        order = relay_orders.check(item.order, item.order_signature, kind="cancel",
                                   fingerprint=who.fingerprint)
        relay_orders.same(order, "task", item.task, "task")
        relay_orders.same(order, "grace", body.grace, "grace")
        checked.append((item, order))
    await relay.db.run(jobs.request_cancel, who.name, job_id, [i.task for i, _ in checked])
    for item, order in checked:
        result = await relay.db.run(relay.tasks.cancel, item.task, body.grace, who.name,
                                    order, item.order_signature)
        relay.bus.publish("task", result.task)
        relay.signals.notify(("task", item.task))
        if result.wake:
            relay.signals.notify(("drone", result.wake))
    await publish_news(relay)
    job: dict[str, Any] = await relay.db.run(jobs.get, job_id)
    relay.bus.publish("job", job)
    return job
