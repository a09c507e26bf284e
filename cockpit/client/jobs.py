"""Sealing, signing and sending a job's trials; cancelling a job (docs/jobs.md).

A sweep (every trial the same target) shares one task key over the job; a fan-out gets
one key per task, so each drone opens only its own. Spares (retry attempts) are the same
spec under the same key, sealed under new order ids. Trials go in chunks of at most 200 and
at most ``CHUNK_BYTES`` of JSON: a trial placed by labels carries its task key wrapped for
every matching drone, so 200 of them over 20 drones pass the relay's 1 MiB body limit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from dragoon.cockpit.client._errors import RelayError
from dragoon.cockpit.client._types import Job, JobSubmitted, Task, TrialSubmit
from dragoon.shared import e2e, orders

if TYPE_CHECKING:
    from dragoon.cockpit.client._client import RelayClient

# Half the relay's default body limit (max_body, 1 MiB): room for the request's own fields.
CHUNK_BYTES = 512 * 1024


def chunks(bodies: list[dict[str, Any]], *, most: int,
           budget: int = CHUNK_BYTES) -> Iterator[list[dict[str, Any]]]:
    """Consecutive runs of ``bodies``, each at most ``most`` long and ``budget`` bytes of JSON.

    A body larger than the budget alone goes in a chunk of its own: the relay then says
    clearly that it is too large, rather than the client refusing what a relay with a
    larger limit would take.
    """
    run: list[dict[str, Any]] = []
    size = 0
    for body in bodies:
        cost = len(json.dumps(body, separators=(",", ":"))) + 1
        if run and (len(run) >= most or size + cost > budget):
            yield run
            run, size = [], 0
        run.append(body)
        size += cost
    if run:
        yield run


async def _bodies(client: RelayClient, trials: list[TrialSubmit], *, retries: int,
                  shared_key: bool, expires_in: int | None,
                  lost_after: int | None,
                  ) -> tuple[list[dict[str, Any]], dict[int, SealedTrial]]:
    from dragoon.cockpit.client._client import checked_spec

    key = e2e.new_task_key() if shared_key else None
    # Every distinct target's recipients looked up together (then cached for the loop):
    # a fan-out to 50 drones is one round trip of lookups, not 50 in a row.
    targets = {(t.drone, tuple(t.labels or ())) for t in trials}
    await asyncio.gather(*(client._recipients_for(drone, list(labels) or None)
                           for drone, labels in targets))
    bodies: list[dict[str, Any]] = []
    sealed_trials: dict[int, SealedTrial] = {}
    key_wraps: Mapping[str, str] | None = None  # the shared key's, once made (one target)
    for trial in trials:
        spec = checked_spec(trial.spec)
        found = await client._recipients_for(trial.drone, trial.labels)
        sealed, body = client._sealed_body(spec, found, drone=trial.drone, labels=trial.labels,
                                           expires_in=expires_in, key=key, wraps=key_wraps)
        if key is not None and key_wraps is None:
            key_wraps = sealed.wraps
        spares = []
        for _ in range(retries):
            _spare, spare_body = client._sealed_body(spec, found, drone=trial.drone,
                                                     labels=trial.labels,
                                                     expires_in=expires_in,
                                                     key=sealed.task_key, wraps=sealed.wraps)
            spares.append({"order": spare_body.get("order"),
                           "order_signature": spare_body.get("order_signature"),
                           "payload": spare_body["payload"]})
        body.update({"trial": trial.trial, "spares": spares})
        if lost_after is not None:
            body["lost_after"] = lost_after
        bodies.append(body)
        sealed_trials[trial.trial] = SealedTrial(sealed.task_key, spec.to_json(),
                                                 body.get("order"))
    return bodies, sealed_trials


@dataclass(frozen=True)
class SealedTrial:
    """What this pilot sealed for one trial: its task key, whole spec and signed order."""

    key: bytes
    spec: dict[str, Any]
    order: Any


def _remember(client: RelayClient, tasks: list[Any],
              sealed: dict[int, SealedTrial]) -> list[Task]:
    """The relay's answer with every spec whole. A task that comes back with the very
    order this pilot signed for its trial is known here already, so it is not opened
    again (a signature check and two decryptions a trial: 0.6 s of a 500-trial submit);
    any other is opened and checked as every task the relay hands over is."""
    shown: list[Task] = []
    for task in tasks:
        mine = sealed.get(task.get("trial")) if isinstance(task, dict) else None
        if mine is not None:
            client.keys.remember(str(task.get("id")), mine.key)
        if mine is not None and mine.order is not None and task.get("order") == mine.order:
            shown.append(cast(Task, {**task, "spec": mine.spec}))
        else:
            shown.append(cast(Task, client.keys.open(task)))
    return shown


def _one_target(trials: Sequence[TrialSubmit]) -> bool:
    return len({(t.drone, tuple(t.labels or ())) for t in trials}) <= 1


async def submit_job(client: RelayClient, job_id: str, *, name: str | None, kind: str,
                     trials: list[TrialSubmit], max_parallel: int | None, retries: int,
                     retry_on: Sequence[int], stop_on_failure: bool,
                     expires_in: int | None, lost_after: int | None,
                     chunk: int) -> JobSubmitted:
    shared = kind == "sweep" and _one_target(trials)
    bodies, sealed = await _bodies(client, trials, retries=retries, shared_key=shared,
                                 expires_in=expires_in, lost_after=lost_after)
    runs = chunks(bodies, most=chunk)
    first = await client._json("POST", "/v1/jobs", json_body={
        "id": job_id, "name": name, "kind": kind, "max_parallel": max_parallel,
        "retries": retries, "retry_on": list(retry_on), "stop_on_failure": stop_on_failure,
        "tasks": next(runs, [])}, resend=True)
    job, tasks = first["job"], _remember(client, first["tasks"], sealed)
    for run in runs:
        try:
            more = await client._json("POST", f"/v1/jobs/{job_id}/tasks",
                                      json_body={"tasks": run}, resend=True)
        except RelayError as exc:
            raise _partly_submitted(exc, job_id, len(tasks), len(bodies)) from exc
        job = more["job"]
        tasks.extend(_remember(client, more["tasks"], sealed))
    return JobSubmitted(cast(Job, job), tasks)


def _partly_submitted(exc: RelayError, job_id: str, sent: int, total: int) -> RelayError:
    """A later chunk refused: the job exists with the trials sent so far, which will run,
    so the error names it and what to do rather than leaving a job the pilot cannot see."""
    return RelayError(exc.code, f"{exc.detail} (job {job_id} has the first {sent} of {total} "
                      f"trials, which will run; `dragoon job cancel {job_id}` stops them)",
                      status=exc.status, body=exc.body)


async def add_job_tasks(client: RelayClient, job_id: str, trials: list[TrialSubmit], *,
                        expires_in: int | None, lost_after: int | None,
                        chunk: int) -> JobSubmitted:
    job = await client.job(job_id)
    bodies, sealed = await _bodies(client, trials, retries=int(job.get("retries") or 0),
                                 shared_key=False, expires_in=expires_in,
                                 lost_after=lost_after)
    tasks: list[Task] = []
    answer: dict[str, Any] = {"job": job}
    for run in chunks(bodies, most=chunk):
        answer = await client._json("POST", f"/v1/jobs/{job_id}/tasks", json_body={"tasks": run},
                                    resend=True)
        tasks.extend(_remember(client, answer["tasks"], sealed))
    return JobSubmitted(cast(Job, answer["job"]), tasks)


async def cancel_job(client: RelayClient, job_id: str, *, grace: int | None) -> Job:
    """A signed cancel order for every active trial; the relay cancels queued ones."""
    cancels = []
    for task in await client.job_tasks(job_id):
        if task.get("state") not in ("dispatched", "running") or not task.get("order_id"):
            continue
        target = (orders.drone_target(task["drone"]) if task.get("drone")
                  else dict(task.get("target") or {}))
        signed = client._signed_order(lambda t=task, g=target: orders.cancel_order(
            target=g, task=t["id"], task_order_id=t["order_id"], grace=grace))
        if signed:
            cancels.append({"task": task["id"], **signed})
    body: dict[str, Any] = {"cancels": cancels}
    if grace is not None:
        body["grace"] = grace
    return cast(Job, await client._json("POST", f"/v1/jobs/{job_id}/cancel", json_body=body))
