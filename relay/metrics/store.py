"""Drones and tasks by state, and bytes stored, read from the store at scrape time.

Gauges kept by incrementing and decrementing drift the first time a code path
forgets one; two ``GROUP BY state`` counts at each scrape cannot. Every known
state is exported, zero included, so a dashboard never sees a series vanish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from dragoon.relay.db import Connection
from dragoon.relay.retention import storage_stats
from dragoon.shared.models import DroneState, TaskState
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class StateCounts:
    """How many drones and tasks are in each state right now, as the store knows it."""

    drones: Mapping[str, int]
    tasks: Mapping[str, int]
    stored_bytes: Mapping[str, int] = dataclass_field(default_factory=dict)  # per drone
    reclaimed_bytes: int = 0  # by retention and gc, ever (kept in the database)


StateReader = Callable[[], StateCounts]
"""Called once per scrape, on the thread that builds the exposition (not the event loop)."""


def count_states(conn: Connection) -> StateCounts:
    """Two ``GROUP BY state`` counts; ``tasks_state`` makes the task one an index scan."""
    drones = dict(conn.execute("SELECT state, COUNT(*) FROM drones GROUP BY state").fetchall())
    tasks = dict(conn.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall())
    storage = storage_stats(conn)
    return StateCounts(drones=drones, tasks=tasks, stored_bytes=storage["drones"],
                       reclaimed_bytes=storage["reclaimed_bytes"])


def store_reader(db: Any) -> StateReader:
    """Counts read on the relay's database thread (``relay.db.Database.call``), which owns the
    connection; the caller (a worker thread building the scrape) waits for them."""

    def read() -> StateCounts:
        counts: StateCounts = db.call(count_states)
        return counts

    return read


class StoreCollector(Collector):
    """``dragoon_relay_drones``/``_tasks`` by ``state`` and ``_storage_*`` bytes, from the store."""

    def __init__(self, read: StateReader, namespace: str) -> None:
        self._read = read
        self._namespace = namespace

    def describe(self) -> Iterator[Metric]:
        """The family names without a store read, so registering costs nothing."""
        yield from _families(self._namespace, StateCounts(drones={}, tasks={}), samples=False)

    def collect(self) -> Iterator[Metric]:
        yield from _families(self._namespace, self._read(), samples=True)


def _families(namespace: str, counts: StateCounts, *, samples: bool) -> Iterator[Metric]:
    for name, help_text, values, states in (
        ("drones", "Drones by state, read from the store at scrape time.", counts.drones,
         DroneState),
        ("tasks", "Tasks by state, read from the store at scrape time.", counts.tasks,
         TaskState),
    ):
        family = GaugeMetricFamily(f"{namespace}_{name}", help_text, labels=["state"])
        if samples:
            merged = _with_zeros(values, states)
            for state in sorted(merged):
                family.add_metric([state], merged[state])
        yield family
    stored = GaugeMetricFamily(f"{namespace}_storage_bytes",
                               "Bytes of output, artifacts and fetched files held, per drone.",
                               labels=["drone"])
    reclaimed = CounterMetricFamily(f"{namespace}_storage_reclaimed_bytes",
                                    "Bytes deleted by retention and dragoon relay gc, ever.")
    if samples:
        for drone in sorted(counts.stored_bytes):
            stored.add_metric([drone], counts.stored_bytes[drone])
        reclaimed.add_metric([], counts.reclaimed_bytes)
    yield stored
    yield reclaimed


def _with_zeros(counts: Mapping[str, int], states: Iterable[str]) -> dict[str, int]:
    merged = dict.fromkeys((str(s) for s in states), 0)
    merged.update({str(k): int(v) for k, v in counts.items()})
    return merged
