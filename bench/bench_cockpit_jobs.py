"""Cockpit jobs benchmark: a 500-trial sweep in the task tree and the job view.

Headless (`App.run_test`) over the fixed data source: first paint with the job,
then task events for its trials until the job node's progress shows them (the
tree's cost per event), then the job view's open and one live refresh (500 rows).

    .venv/bin/python bench/bench_cockpit_jobs.py [--trials 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.screens.job import JobScreen

from tests.cockpit.fixed_source import NOW, FixedSource, demo_snapshot, make_job, make_trial

JOB = "j-0000000001"


async def run(trials: int) -> dict[str, Any]:
    snap = demo_snapshot()
    tasks = [make_trial(JOB, i, "queued", {"lr": f"1e-{i % 5}", "bs": str(32 << i % 3)})
             for i in range(trials)]
    snap.tasks += tasks
    snap.jobs = [make_job(JOB, trials=trials)]
    snap.messages += [{"id": 1000 + i, "task": t["id"], "text": f"loss={1 / (i + 1):.4f}",
                       "created_at": NOW + i, "acked": False} for i, t in enumerate(tasks)]
    source = FixedSource(snap)
    app = CockpitApp(source, ping_interval=3600)  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        while not (app.snapshots and not app._pending):
            await pilot.pause(0.01)
        out["first_paint_s"] = time.perf_counter() - t0
        latencies = []
        for k in range(50):
            start = time.perf_counter()
            source.events_queue.put_nowait(("task", {**tasks[k], "state": "running",
                                                     "drone": "gpu-00", "started_at": NOW}))
            while f" {k + 1}▶ " not in str(app.tree._job_nodes[JOB].label):
                await asyncio.sleep(0.001)
            latencies.append(time.perf_counter() - start)
        out["event_to_tree_ms"] = (statistics.median(latencies) * 1000, max(latencies) * 1000)
        start = time.perf_counter()
        app.open_job(JOB)
        while not (isinstance(app.screen, JobScreen) and app.screen.is_mounted
                   and app.screen.refreshes):
            await asyncio.sleep(0.001)
        out["job_view_open_ms"] = (time.perf_counter() - start) * 1000
        screen = app.screen
        start = time.perf_counter()
        screen.refresh_job()
        out["job_view_refresh_ms"] = (time.perf_counter() - start) * 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=500)
    for key, value in asyncio.run(run(parser.parse_args().trials)).items():
        if isinstance(value, tuple):
            print(f"{key:20} median {value[0]:8.1f}  worst {value[1]:8.1f}")
        else:
            print(f"{key:20} {value:10.2f}")


if __name__ == "__main__":
    main()
