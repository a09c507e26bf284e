"""Every figure the relay exports, in one per-app ``CollectorRegistry``.

Counters and histograms are prometheus-client's, so they are thread-safe for
the database and worker threads and render in either exposition format.
State (drones and tasks by state) is never a counter here: a collector reads
it from the store at scrape time, so it cannot drift from the truth.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from dragoon.relay.metrics.store import StateReader, StoreCollector
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder, generate_latest

NAMESPACE: Final = "dragoon_relay"
# Request latency: sub-millisecond API calls up to 25 s long-polls and SSE streams.
REQUEST_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
# Dispatch latency: a task for an idle, long-polling drone leaves in about a millisecond;
# one queued behind busy slots or for an offline drone may wait hours.
DISPATCH_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0,
    300.0, 3600.0, 86400.0,
)

_RequestKey = tuple[str, str, str]


class RelayMetrics:
    """One relay's registry: request, auth-failure and dispatch families, store state, process.

    Family order in the exposition is registration order: state first, then
    requests, auth failures, dispatch, and the process.
    """

    def __init__(self, *, state_reader: StateReader | None = None) -> None:
        self.registry = CollectorRegistry()
        if state_reader is not None:
            self.registry.register(StoreCollector(state_reader, NAMESPACE))
        labels = ("method", "route", "status")
        self._requests = Counter(
            "http_requests", "HTTP requests answered, by method, route template and status.",
            labels, namespace=NAMESPACE, registry=self.registry,
        )
        self._durations = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (long-polls and streams included), by route template.",
            labels, namespace=NAMESPACE, buckets=REQUEST_BUCKETS, registry=self.registry,
        )
        self._auth_failures = Counter(
            "auth_failures", "Requests refused with 401, by the error code of the answer.",
            ("code",), namespace=NAMESPACE, registry=self.registry,
        )
        self._dispatch = Histogram(
            "dispatch_latency_seconds",
            "Time from a task's submission to its hand-over to a drone.",
            namespace=NAMESPACE, buckets=DISPATCH_BUCKETS, registry=self.registry,
        )
        ProcessCollector(namespace=NAMESPACE, registry=self.registry)
        # Label children by key: a request costs a dict look-up, not prometheus-client's
        # label validation. Bounded like the labels: method x route template x status.
        self._children: dict[_RequestKey, tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        children = self._children.get(key)
        if children is None:  # two threads may both get here: labels() hands both the same child
            children = (self._requests.labels(*key), self._durations.labels(*key))
            self._children[key] = children
        counter, histogram = children
        counter.inc()
        histogram.observe(seconds)

    def observe_auth_failure(self, code: str) -> None:
        self._auth_failures.labels(code).inc()

    def observe_dispatch(self, created_at: float, *, now: float | None = None) -> None:
        """A task created at ``created_at`` was just handed to a drone."""
        waited = (time.time() if now is None else now) - created_at
        self._dispatch.observe(max(waited, 0.0))

    def observe_dispatched_task(self, task: Mapping[str, Any]) -> None:
        """The dispatcher's hook over a task view: ``dispatched_at - created_at``, on the
        relay's clock."""
        created = task.get("created_at")
        if isinstance(created, int | float):
            dispatched = task.get("dispatched_at")
            self.observe_dispatch(created, now=dispatched if isinstance(dispatched, int | float)
                                  else None)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The whole scrape in the format the ``Accept`` header asks for, and its content type.

        OpenMetrics when the scraper asks for ``application/openmetrics-text``,
        else the text format 0.0.4. The store is read here, once per call, on
        the database thread: call it from a worker thread, never from that one.
        """
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def render(self) -> str:
        """The text format 0.0.4, for tests and tools that read it directly."""
        return generate_latest(self.registry).decode("utf-8")
