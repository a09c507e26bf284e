"""A job's trials as a table: one row per trial (its latest attempt), params and metrics.

The relay cannot read a trial's parameters (they are in its sealed spec) nor its
messages (sealed too): both are read here from what the client opened, the
parameters from the spec's ``DRAGOON_PARAMS``, the metrics from the last message's
``NAME=NUMBER`` tokens (shared/metrics_text.py). Rows are plain dicts, shared by
the table, ``--json`` and ``--csv``; sorting is by any column, numbers as numbers.
Pure but for ``last_messages``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dragoon.shared.metrics_text import metric_text, parse_metrics

if TYPE_CHECKING:
    from dragoon.cockpit.client import RelayClient

FAILED_STATES = ("failed", "timed_out", "lost")
FIXED = ("trial", "drone", "state", "exit", "duration", "attempt", "message")


def latest_attempts(tasks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each trial's latest attempt, in trial order."""
    latest: dict[int, dict[str, Any]] = {}
    for task in tasks:
        trial = task.get("trial")
        if not isinstance(trial, int):
            continue
        seen = latest.get(trial)
        if seen is None or int(task.get("attempt") or 0) > int(seen.get("attempt") or 0):
            latest[trial] = dict(task)
    return [latest[n] for n in sorted(latest)]


def params_of(task: Mapping[str, Any]) -> dict[str, str]:
    """The trial's point, from its opened spec's DRAGOON_PARAMS; {} when sealed or none."""
    env = (task.get("spec") or {}).get("env") or {}
    raw = env.get("DRAGOON_PARAMS") if isinstance(env, Mapping) else None
    try:
        point = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in point.items()} if isinstance(point, dict) else {}


def _duration(task: Mapping[str, Any], now: float) -> float | None:
    started = task.get("started_at")
    if not isinstance(started, int | float):
        return None
    ended = task.get("finished_at")
    return (float(ended) if isinstance(ended, int | float) else now) - float(started)


def trial_rows(tasks: Iterable[Mapping[str, Any]], messages: Mapping[str, str], *,
               now: float | None = None) -> list[dict[str, Any]]:
    """One row per trial: ``trial, params, task, drone, state, exit_code, signal, duration,
    attempt, message, metrics, error``; ``messages`` is each task's last message text."""
    now = time.time() if now is None else now
    rows = []
    for task in latest_attempts(tasks):
        text = messages.get(str(task.get("id")))
        rows.append({
            "trial": task["trial"], "params": params_of(task), "task": task.get("id"),
            "drone": task.get("drone"), "state": task.get("state"),
            "exit_code": task.get("exit_code"), "signal": task.get("signal"),
            "duration": _duration(task, now), "attempt": task.get("attempt") or 0,
            "message": text, "metrics": parse_metrics(text) if text else {},
            "error": task.get("error"),
        })
    return rows


def columns(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(parameter names, metric names), each in order of first appearance."""
    params: dict[str, None] = {}
    metrics: dict[str, None] = {}
    for row in rows:
        params.update(dict.fromkeys(row["params"]))
        metrics.update(dict.fromkeys(row["metrics"]))
    return list(params), list(metrics)


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
    return list(dict.fromkeys([*FIXED, *params, *metrics]))


def sort_rows(rows: list[dict[str, Any]], field: str, params: Sequence[str],
              metrics: Sequence[str]) -> list[dict[str, Any]]:
    """By ``field`` (``-field``: descending); numbers as numbers, text as text, blanks and
    NaN last either way. A field that is no column is a ``KeyError`` naming the choices."""
    descending = field.startswith("-")
    name = field.lstrip("-")
    if name not in sort_fields(params, metrics):
        raise KeyError(name)

    def number(value: Any) -> float | None:
        if isinstance(value, bool) or value is None:
            return None
        try:
            got = float(value)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(got) else got

    present, blank = [], []
    for row in rows:
        value = cell_values(row, params, metrics)[name]
        (blank if value is None or (number(value) is None and not isinstance(value, str))
         else present).append((value, row))
    all_numbers = all(number(value) is not None for value, _ in present)
    present.sort(key=lambda pair: number(pair[0]) if all_numbers else str(pair[0]),
                 reverse=descending)
    return [row for _, row in present] + [row for _, row in blank]


def table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells for ``render.print_table`` (which makes every cell safe text)."""
    from dragoon.cockpit.formatting import format_duration

    params, metrics = columns(rows)
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
    params, metrics = columns(rows)
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


async def last_messages(client: RelayClient, task_ids: Iterable[str]) -> dict[str, str]:
    """Each task's last inbox message, opened: the inbox is paged through once, and only the
    job's own messages are opened (the relay has no per-task filter of the inbox yet)."""
    wanted = set(task_ids)
    latest: dict[str, Mapping[str, Any]] = {}
    after = 0
    while True:
        answer = await client._json("GET", "/v1/messages",
                                    query={"after": after, "limit": 1000})
        batch = answer.get("messages") or []
        for message in batch:
            task = message.get("task")
            if task in wanted:
                seen = latest.get(task)
                if seen is None or int(message.get("index") or 0) >= int(seen.get("index")
                                                                         or 0):
                    latest[task] = message
        if len(batch) < 1000:
            break
        after = int(batch[-1]["id"])
    texts: dict[str, str] = {}
    for task_id, message in latest.items():
        opened = await client.open_message(message)
        if "text" in opened:
            texts[task_id] = str(opened["text"])
    return texts
