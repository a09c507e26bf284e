"""A job's trials, for every door that shows them: the cockpit's tree and job view, and
``dragoon job show`` (its table, ``--json`` and ``--csv``).

The relay cannot read a trial's parameters nor its messages (both sealed), so they are
read here from what the client opened: the parameters from the spec's ``DRAGOON_PARAMS``,
the metrics from the trial's newest message by the one rule of shared/metrics_text.py.
One row model (``TrialRow``, each trial's latest attempt) under both doors, so the CLI and
the cockpit cannot disagree on what a trial's params, message or metrics are. Pure (no
Textual, no relay): it lives beside formatting.py because the app may not import the CLI
(tests/test_import_rules.py) and the API client has no business with tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from dragoon.cockpit.formatting import format_duration, message_text
from dragoon.cockpit.safe_text import clean
from dragoon.shared.metrics_text import metric_text, parse_metrics

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


def latest_in_order(tasks: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Each trial's latest attempt, in trial order."""
    return [task for _, task in sorted(latest_attempts(tasks).items())]


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


def _row(trial: int, task: Mapping[str, Any], text: str | None, measured: bool) -> TrialRow:
    """A trial's row; its metrics are read from ``text`` only when ``measured`` (a message
    that did not open says so in ``text``, and that is no trial's words)."""
    metrics = parse_metrics(text) if measured and text else {}
    return TrialRow(trial, task, params_of(task), text, metrics)


def rows(tasks: Iterable[Mapping[str, Any]],
         messages: Mapping[str, Mapping[str, Any]]) -> list[TrialRow]:
    """One row per trial (its latest attempt), in trial order; ``messages`` is each task's
    newest message as the client opened it (``newest_messages``)."""
    out = []
    for trial, task in sorted(latest_attempts(tasks).items()):
        m = messages.get(str(task.get("id")))
        out.append(_row(trial, task, message_text(m) if m is not None else None,
                        m is not None and "error" not in m))
    return out


def text_rows(tasks: Iterable[Mapping[str, Any]], texts: Mapping[str, str]) -> list[TrialRow]:
    """``rows`` when each task's last message is already its opened text (the CLI's)."""
    return [_row(trial, task, texts.get(str(task.get("id"))), True)
            for trial, task in sorted(latest_attempts(tasks).items())]


def _names(found: Iterable[tuple[Iterable[str], Iterable[str]]]) -> tuple[list[str], list[str]]:
    params: dict[str, None] = {}
    metrics: dict[str, None] = {}
    for param_names, metric_names in found:
        params.update(dict.fromkeys(param_names))
        metrics.update(dict.fromkeys(metric_names))
    return list(params), list(metrics)


def columns(trials: Sequence[TrialRow]) -> tuple[list[str], list[str]]:
    """(parameter names, metric names), each in order of first appearance."""
    return _names((row.params or {}, row.metrics) for row in trials)


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


def as_number(raw: Any, *, finite: bool = True) -> float | None:
    """``raw`` as a number, or None (a bool, a blank, text that is none, NaN; and an
    infinity unless ``finite`` is False)."""
    if isinstance(raw, bool) or raw is None:
        return None
    try:
        got = float(raw)
    except (TypeError, ValueError):
        return None
    if math.isnan(got) or (finite and math.isinf(got)):
        return None
    return got


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


# -- ``dragoon job show``: rows as plain dicts, shared by the table, ``--json`` and ``--csv`` --

def trial_rows(tasks: Iterable[Mapping[str, Any]], messages: Mapping[str, str], *,
               now: float | None = None) -> list[dict[str, Any]]:
    """One row per trial: ``trial, params, task, drone, state, exit_code, signal, duration,
    attempt, message, metrics, error``; ``messages`` is each task's last message text."""
    now = time.time() if now is None else now
    return [{
        "trial": row.trial, "params": row.params or {}, "task": row.task.get("id"),
        "drone": row.task.get("drone"), "state": row.task.get("state"),
        "exit_code": row.task.get("exit_code"), "signal": row.task.get("signal"),
        "duration": duration(row.task, now), "attempt": row.task.get("attempt") or 0,
        "message": row.message, "metrics": row.metrics, "error": row.task.get("error"),
    } for row in text_rows(tasks, messages)]


def row_columns(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """``columns`` of ``trial_rows``' rows."""
    return _names((row["params"], row["metrics"]) for row in rows)


def _exit(row: Mapping[str, Any]) -> str:
    if row.get("signal"):
        return f"sig {row['signal']}"
    return "-" if row.get("exit_code") is None else str(row["exit_code"])


def cell_values(row: Mapping[str, Any], params: Sequence[str],
                metrics: Sequence[str]) -> dict[str, Any]:
    """Every column of a row by name, as the sort and the CSV see them (raw values)."""
    values: dict[str, Any] = {"trial": row["trial"], "drone": row.get("drone"),
                              "state": row.get("state"), "exit": row.get("exit_code"),
                              "duration": row.get("duration"), "attempt": row.get("attempt"),
                              "message": row.get("message")}
    for name in params:
        values[name] = row["params"].get(name)
    for name in metrics:
        values[name] = row["metrics"].get(name)
    return values


def sort_fields(params: Sequence[str], metrics: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*FIXED_COLUMNS, *params, *metrics]))


def sort_table(rows: list[dict[str, Any]], field: str, params: Sequence[str],
               metrics: Sequence[str]) -> list[dict[str, Any]]:
    """By ``field`` (``-field``: descending); numbers as numbers, text as text, blanks and
    NaN last either way. A field that is no column is a ``KeyError`` naming the choices."""
    descending = field.startswith("-")
    name = field.lstrip("-")
    if name not in sort_fields(params, metrics):
        raise KeyError(name)
    present, blank = [], []
    for row in rows:
        value = cell_values(row, params, metrics)[name]
        (blank if value is None or (as_number(value, finite=False) is None
                                    and not isinstance(value, str))
         else present).append((value, row))
    all_numbers = all(as_number(value, finite=False) is not None for value, _ in present)
    present.sort(key=lambda pair: as_number(pair[0], finite=False) if all_numbers
                 else str(pair[0]), reverse=descending)
    return [row for _, row in present] + [row for _, row in blank]


def table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells for ``render.print_table`` (which makes every cell safe text)."""
    params, metrics = row_columns(rows)
    headers = ["TRIAL", *(p.upper() for p in params), "DRONE", "STATE", "EXIT", "TIME", "TRY",
               *metrics, "MESSAGE"]
    cells = [[str(row["trial"]), *(row["params"].get(p, "-") for p in params),
              str(row.get("drone") or "-"), str(row.get("state") or "?"), _exit(row),
              format_duration(row.get("duration")), str(row.get("attempt") or 0),
              *(metric_text(row["metrics"][m]) if m in row["metrics"] else "-"
                for m in metrics),
              (row.get("message") or row.get("error") or "-")[:80]] for row in rows]
    return headers, cells


def as_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """One header line and a line per trial; the exact text (a spreadsheet's, not a terminal's)."""
    params, metrics = row_columns(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["trial", *params, "drone", "state", "exit_code", "signal", "duration",
                     "attempt", *metrics, "message", "task"])
    for row in rows:
        duration = row.get("duration")
        writer.writerow([row["trial"], *(row["params"].get(p, "") for p in params),
                         row.get("drone") or "", row.get("state") or "",
                         "" if row.get("exit_code") is None else row["exit_code"],
                         row.get("signal") or "",
                         "" if duration is None else f"{duration:.1f}",
                         row.get("attempt") or 0,
                         *(repr(row["metrics"][m]) if m in row["metrics"] else ""
                           for m in metrics),
                         row.get("message") or "", row.get("task") or ""])
    return out.getvalue()


def json_safe(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for ``--json``: a NaN or infinite metric is a string (JSON has no such number)."""
    def fix(value: float) -> Any:
        return value if math.isfinite(value) else metric_text(value)
    return [{**row, "metrics": {k: fix(v) for k, v in row["metrics"].items()}} for row in rows]
