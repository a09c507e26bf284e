"""A job's trials as the cockpit shows them: progress counts, table rows, sort keys, plot points.

The relay cannot read a trial's parameters nor its messages (both sealed), so they
are read here from what the client opened: the parameters from the spec's
``DRAGOON_PARAMS``, the metrics from the trial's newest message by the one rule of
shared/metrics_text.py. Pure (no Textual): the tree, the job view and the tests
share it. The CLI has its own table of the same rows (cockpit/cli/_trials.py); the
app may not import the CLI (tests/test_import_rules.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from dragoon.cockpit.formatting import message_text
from dragoon.cockpit.safe_text import clean
from dragoon.shared.metrics_text import parse_metrics

FAILED: Final = frozenset({"failed", "timed_out", "lost"})
ACTIVE: Final = frozenset({"dispatched", "running"})
FIXED_COLUMNS: Final = ("trial", "drone", "state", "exit", "duration", "attempt", "message")
SEALED: Final = "(sealed)"


def latest_attempts(tasks: Iterable[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """Each trial's latest attempt, by trial number."""
    latest: dict[int, Mapping[str, Any]] = {}
    for task in tasks:
        trial = task.get("trial")
        if not isinstance(trial, int) or isinstance(trial, bool):
            continue
        seen = latest.get(trial)
        if seen is None or int(task.get("attempt") or 0) > int(seen.get("attempt") or 0):
            latest[trial] = task
    return latest


def counts(tasks: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Latest attempts per state class, as JOBVIEW counts them (dispatched is running;
    failed, timed_out and lost are failed)."""
    out = {"queued": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    for task in latest_attempts(tasks).values():
        state = str(task.get("state"))
        key = ("running" if state in ACTIVE else "failed" if state in FAILED else state)
        if key in out:
            out[key] += 1
    return out


def job_counts(job: Mapping[str, Any] | None, tasks: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The counts from the trials held when the cockpit holds them all (task events keep
    them live); else the relay's JOBVIEW counts, which also know the trials not held."""
    held = counts(tasks)
    relay = (job or {}).get("counts")
    trials = (job or {}).get("trials")
    if isinstance(relay, Mapping) and isinstance(trials, int) and sum(held.values()) < trials:
        return {k: int(relay.get(k) or 0) if isinstance(relay.get(k), int) else 0 for k in held}
    return held


def progress_text(c: Mapping[str, int]) -> str:
    """`12✓ 3▶ 85… 1✗` (done, running, queued, failed; cancelled only when some are)."""
    text = f"{c.get('succeeded', 0)}✓ {c.get('running', 0)}▶ {c.get('queued', 0)}… " \
           f"{c.get('failed', 0)}✗"
    return text + (f" {c['cancelled']}⊘" if c.get("cancelled") else "")


def params_of(task: Mapping[str, Any]) -> dict[str, str] | None:
    """The trial's point from its opened spec's DRAGOON_PARAMS; None while sealed."""
    if task.get("sealed"):
        return None
    env = (task.get("spec") or {}).get("env") or {}
    raw = env.get("DRAGOON_PARAMS") if isinstance(env, Mapping) else None
    try:
        point = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in point.items()} if isinstance(point, dict) else {}


@dataclass
class TrialRow:
    trial: int
    task: Mapping[str, Any]
    params: dict[str, str] | None
    message: str | None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return str(self.task.get("id"))


def newest_messages(messages: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Each task's newest message (by id)."""
    out: dict[str, Mapping[str, Any]] = {}
    for m in messages:
        task = str(m.get("task"))
        if task not in out or int(m.get("id") or 0) > int(out[task].get("id") or 0):
            out[task] = m
    return out


def rows(tasks: Iterable[Mapping[str, Any]],
         messages: Mapping[str, Mapping[str, Any]]) -> list[TrialRow]:
    """One row per trial (its latest attempt), in trial order."""
    out = []
    for trial, task in sorted(latest_attempts(tasks).items()):
        m = messages.get(str(task.get("id")))
        text = message_text(m) if m is not None else None
        metrics = parse_metrics(text) if m is not None and "error" not in m and text else {}
        out.append(TrialRow(trial, task, params_of(task), text, metrics))
    return out


def columns(trials: Sequence[TrialRow]) -> tuple[list[str], list[str]]:
    """(parameter names, metric names), each in order of first appearance."""
    params: dict[str, None] = {}
    metrics: dict[str, None] = {}
    for row in trials:
        params.update(dict.fromkeys(row.params or {}))
        metrics.update(dict.fromkeys(row.metrics))
    return list(params), list(metrics)


def duration(task: Mapping[str, Any], now: float) -> float | None:
    from dragoon.cockpit.app.state import task_elapsed

    return task_elapsed(task, now)


def value(row: TrialRow, column: str, now: float) -> Any:
    """A column's raw value: `param:NAME`, `metric:NAME` or one of FIXED_COLUMNS."""
    task = row.task
    if column.startswith("param:"):
        return None if row.params is None else row.params.get(column[6:])
    if column.startswith("metric:"):
        return row.metrics.get(column[7:])
    return {"trial": row.trial, "drone": task.get("drone"), "state": task.get("state"),
            "exit": task.get("exit_code"), "duration": duration(task, now),
            "attempt": task.get("attempt") or 0, "message": row.message}.get(column)


def as_number(raw: Any) -> float | None:
    if isinstance(raw, bool) or raw is None:
        return None
    try:
        got = float(raw)
    except (TypeError, ValueError):
        return None
    return got if math.isfinite(got) else None


def sort_rows(trials: Sequence[TrialRow], column: str, *, reverse: bool = False,
              now: float = 0.0) -> list[TrialRow]:
    """Numbers as numbers (when every value of the column is one), else as text; blanks
    last either way; ties by trial."""
    present = [(value(r, column, now), r) for r in trials]
    blank = [r for v, r in present if v is None or (isinstance(v, float) and math.isnan(v))]
    kept = [(v, r) for v, r in present if r not in blank]
    numeric = all(as_number(v) is not None for v, _ in kept)
    kept.sort(key=lambda p: (as_number(p[0]) if numeric else clean(p[0]), p[1].trial),
              reverse=reverse)
    return [r for _, r in kept] + sorted(blank, key=lambda r: r.trial)


def plot_points(trials: Sequence[TrialRow], metric: str, x: str,
                messages: Iterable[Mapping[str, Any]],
                start: float) -> tuple[list[tuple[float, float]], list[str] | None]:
    """Points of `metric` against parameter `x` (one per trial; a non-numeric parameter
    becomes categories, in sorted order) or against `time` (every message of the job's
    trials that reports it, seconds since `start`). Returns (points, categories or None)."""
    if x == "time":
        ids = {r.task_id for r in trials}
        points = []
        for m in messages:
            if str(m.get("task")) not in ids or "error" in m or not isinstance(m.get("text"), str):
                continue
            got = parse_metrics(str(m["text"])).get(metric)
            when = as_number(m.get("created_at"))
            if got is not None and when is not None:
                points.append((when - start, got))
        return points, None
    pairs = [((r.params or {}).get(x), r.metrics.get(metric)) for r in trials]
    pairs = [(px, y) for px, y in pairs if px is not None and y is not None]
    if all(as_number(px) is not None for px, _ in pairs):
        return [(float(px), y) for px, y in pairs], None
    categories = sorted({px for px, _ in pairs})
    return [(float(categories.index(px)), y) for px, y in pairs], categories
