"""A queued task's ``waiting`` object in words, as the task detail and the CLI show it."""

from __future__ import annotations

import io
import time

from dragoon.cockpit.app.screens.detail import task_summary
from dragoon.cockpit.waiting import describe, key
from rich.console import Console

NOW = 1_763_900_000.0


def rendered(task: dict[str, object]) -> str:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(task_summary(task, NOW))
    return out.getvalue()


def test_each_reason_reads_as_one_phrase() -> None:
    since = NOW - 180
    clock = time.strftime("%H:%M", time.localtime(since))
    assert describe({"reason": "offline", "drone": "box-1", "since": since}, now=NOW) == (
        f"drone box-1 offline since {clock} (3m00s ago)")
    assert describe({"reason": "offline", "drone": "box-1", "since": None}, now=NOW) == (
        "drone box-1 offline (never came online)")
    assert describe({"reason": "draining", "drone": "box-1"}, now=NOW) == "drone box-1 draining"
    assert describe({"reason": "busy", "drone": "box-1", "slots": 2, "running": 2},
                    now=NOW) == "drone box-1: 2/2 slots busy"
    assert describe({"reason": "no_match", "drone": None, "labels": ["x", "y"],
                     "candidates": 0}, now=NOW) == "no drone has labels x,y"
    assert describe({"reason": "busy", "drone": "g-1", "slots": 1, "running": 1,
                     "labels": ["gpu"], "candidates": 3}, now=NOW) == (
        "none of the 3 drones with labels gpu is free (best: drone g-1: 1/1 slots busy)")


def test_a_new_line_only_when_the_reason_or_the_drone_changes() -> None:
    busy = {"reason": "busy", "drone": "box-1", "slots": 2, "running": 2}
    assert key(busy) == key({**busy, "running": 3})
    assert key(busy) != key({**busy, "reason": "offline"})
    assert key({"reason": "dispatching", "drone": "box-1"}) is None  # nothing to say


def test_the_task_detail_shows_why_a_queued_task_waits() -> None:
    task = {"id": "t-aaaaaaaaaa", "state": "queued", "target": {"drone": "box-1"},
            "spec": {"command": "true"},
            "waiting": {"reason": "draining", "drone": "box-1", "since": NOW}}
    lines = [line.split() for line in rendered(task).splitlines()]
    assert ["Waiting", "drone", "box-1", "draining"] in lines
    assert "Waiting" not in rendered({**task, "state": "cancelled"})
