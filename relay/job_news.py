"""Publishing what ``jobs.settle`` changed, after its commit: job views, new or changed
task views, wake-ups for the drones that may take a retry.

The settle runs deep inside other stores' transactions (finish, sweeper, dispatch,
cancel); rather than thread its results back up every caller, it queues them on
``jobs.NEWS`` and each door that may have settled calls ``publish_news`` after.
"""

from __future__ import annotations

from typing import Any

from dragoon.relay import jobs
from dragoon.relay.context import Relay
from dragoon.relay.db import Connection
from dragoon.relay.tasks import row_of


def _views(conn: Connection, relay: Relay, job_ids: list[str],
           task_ids: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    job_views = [jobs.view(conn, row) for j in job_ids if (row := jobs.row_of(conn, j))]
    task_views = [relay.tasks.view(conn, row) for t in task_ids if (row := row_of(conn, t))]
    return job_views, task_views


async def publish_news(relay: Relay) -> None:
    news = jobs.drain_news()
    if not news:
        return
    job_ids = list(dict.fromkeys(job for job, _, _ in news))
    task_ids = list(dict.fromkeys(t for _, ids, _ in news for t in ids))
    job_views, task_views = await relay.db.run(_views, relay, job_ids, task_ids)
    for task in task_views:
        relay.bus.publish("task", task)
        relay.signals.notify(("task", task["id"]))
    for job in job_views:
        relay.bus.publish("job", job)
    for drone in dict.fromkeys(d for _, _, wake in news for d in wake):
        relay.signals.notify(("drone", drone))
