"""bench/trace_tiny_task.py times a task by the drone's own log lines: they must stay readable.

If the drone's log format or the wording of "started", "exited" or "finish
acknowledged" changes, the trace would silently lose those steps; this test
says so instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.drone.conftest import Fleet
from tests.support.relay import wait_until

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from trace_tiny_task import drone_marks  # noqa: E402


def test_trace_reads_every_drone_mark_of_a_real_task(fleet: Fleet) -> None:
    drone = fleet.drone("tracer")
    task_id = fleet.submit("echo hi", drone="tracer")
    task = fleet.wait_state(task_id, timeout=60)
    assert task["exit_code"] == 0

    def all_three() -> dict[str, float] | None:
        marks = drone_marks(drone.log_text()).get(task_id, {})
        return marks if len(marks) == 3 else None

    marks = wait_until(all_three, timeout=30, interval=0.1, message="three drone log marks")
    assert marks["spawned"] <= marks["noticed"] <= marks["acked"]
    # The log's clock is the wall clock the relay's record uses too (to the millisecond).
    assert abs(marks["acked"] - task["finished_at"]) < 60
