"""Prometheus metrics for the relay, on ``prometheus-client``: ``GET /metrics``.

Each relay app has a registry of its own (never the library's global one), so
two relays in one process (tests) never share a series. The modules:

- ``families``    RelayMetrics: the registry, every family in it, and the exposition
- ``middleware``  times each request by route template and status; counts 401s by code
- ``store``       drones and tasks by state, read from the database at each scrape
- ``scrape``      the ``/metrics`` route: who may scrape, text format or OpenMetrics

Labels are bounded on purpose: requests are labelled by the *route template*
(``/v1/tasks/{id}``), never the raw path, so a scrape stays small however many
tasks exist, and unmatched paths share one ``route="unmatched"`` label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from dragoon.relay.metrics.families import (
    DISPATCH_BUCKETS,
    NAMESPACE,
    REQUEST_BUCKETS,
    RelayMetrics,
)
from dragoon.relay.metrics.middleware import UNMATCHED_ROUTE, RequestMetrics, route_template
from dragoon.relay.metrics.scrape import CONTENT_TYPE, METRICS_PATH, TOKEN_FILE, add_route
from dragoon.relay.metrics.store import StateCounts, StateReader, count_states, store_reader

__all__ = [
    "CONTENT_TYPE",
    "DISPATCH_BUCKETS",
    "DISPATCH_HOOK",
    "METRICS_PATH",
    "NAMESPACE",
    "REQUEST_BUCKETS",
    "TOKEN_FILE",
    "UNMATCHED_ROUTE",
    "RelayMetrics",
    "RequestMetrics",
    "StateCounts",
    "StateReader",
    "count_states",
    "install",
    "install_for_relay",
    "route_template",
    "store_reader",
]

DISPATCH_HOOK: Final = "task_dispatched"


def install(app: Any, *, state_reader: StateReader | None, data_dir: Path | None) -> RelayMetrics:
    """Time every request of a FastAPI app and serve its ``/metrics``.

    The metrics are kept on ``app.state.metrics``. Added last, the middleware
    is the outermost one, so its timing covers the whole request including
    the relay's own middlewares. Without a ``data_dir`` there is no token
    file, so only loopback peers may scrape.
    """
    metrics = RelayMetrics(state_reader=state_reader)
    app.add_middleware(RequestMetrics, metrics=metrics)
    add_route(app, metrics, token_file=(data_dir / TOKEN_FILE) if data_dir is not None else None)
    app.state.metrics = metrics
    return metrics


def install_for_relay(app: Any) -> RelayMetrics:
    """:func:`install` on an app of ``relay.app.create_app``: its store, data dir and dispatcher.

    The dispatcher calls ``relay.hooks["task_dispatched"](task)`` with the task's
    view each time a queued task is handed to a drone.
    """
    relay = app.state.relay
    metrics = install(app, state_reader=store_reader(relay.db), data_dir=relay.config.data_dir)
    relay.hooks[DISPATCH_HOOK] = metrics.observe_dispatched_task
    return metrics
