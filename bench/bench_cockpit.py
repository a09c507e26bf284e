"""Cockpit benchmarks: first paint, event-to-screen latency, load, keystroke-to-paint.

The app runs headless (`App.run_test`, which still lays out and renders every
frame, it only does not write to a terminal) over the fixed in-memory data
source of the tests, scaled up: 1,000 drones, 10,000 tasks, a 1,000,000-line
log. A pump feeds metric events for every drone once per `--period` seconds
(200 events/s at 5 s), so the figures measure the cockpit, not a relay.

    .venv/bin/python bench/bench_cockpit.py [--seconds 20] [--drones 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.live import Snapshot
from textual import events

from tests.cockpit.fixed_source import FixedSource, make_drone, make_task

STATES = ["running", "succeeded", "failed", "succeeded", "cancelled", "queued", "succeeded"]


def big_snapshot(drones: int, tasks: int) -> Snapshot:
    ds = [make_drone(i, name=f"node-{i:04d}") for i in range(drones)]
    ts = []
    for i in range(tasks):
        state = STATES[i % len(STATES)]
        drone = None if state == "queued" else f"node-{i % drones:04d}"
        ts.append(make_task(i, state, drone))
    return Snapshot(drones=ds, tasks=ts, messages=[])


def big_log(lines: int) -> dict[str, bytes]:
    out = b"".join(b"step %07d loss=%.5f lr=3e-4 tokens/s=12345\n" % (i, 1 / (i + 1))
                   for i in range(lines))
    return {"stdout": out, "stderr": b""}


async def painted(app: CockpitApp) -> None:
    """Until the screen has no widget left to repaint (the compositor ran)."""
    await asyncio.sleep(0)
    while app.screen._dirty_widgets:
        await asyncio.sleep(0.001)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    proc = psutil.Process()
    snapshot = big_snapshot(args.drones, args.tasks)
    source = FixedSource(snapshot, big_log(args.lines))
    app = CockpitApp(source, ping_interval=3600)
    results: dict[str, Any] = {}
    flushes: list[float] = []
    original_flush = app.flush

    def timed_flush() -> None:
        start = time.perf_counter()
        original_flush()
        flushes.append(time.perf_counter() - start)

    app.flush = timed_flush  # type: ignore[method-assign]
    rss_before = proc.memory_info().rss
    t0 = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        while not (app.snapshots and not app._pending and app.grid.row_count == args.drones):
            await pilot.pause(0.01)
        await pilot.pause()
        results["first_paint_s"] = time.perf_counter() - t0

        # the million-line log, attached and followed to its end
        t1 = time.perf_counter()
        task_id = str(snapshot.tasks[7]["id"])  # not the one attached at start: a fresh buffer
        app.attach_log(task_id)
        while app.log_view.line_count < args.lines:
            await asyncio.sleep(0.005)
        results["log_load_s"] = time.perf_counter() - t1
        results["log_index_mb"] = app.log_view.buffer.memory_bytes() / 1e6

        # latency: one drone event until its cell shows the new value
        latencies = []
        for k in range(20):
            name = f"node-{(k * 37) % args.drones:04d}"
            cpu = 1.0 + k
            drone = dict(app.state.drones[name])
            drone["metrics"] = {**(drone.get("metrics") or {}), "cpu_percent": cpu}
            start = time.perf_counter()
            source.events_queue.put_nowait(("drone", drone))
            while f"{cpu:4.0f}%" not in str(app.grid.get_cell(name, "cpu")):
                await asyncio.sleep(0.001)
            await painted(app)
            latencies.append(time.perf_counter() - start)
        results["event_latency_ms"] = (statistics.median(latencies) * 1000,
                                       max(latencies) * 1000)

        # steady load: every drone reports every `period` s, the log keeps growing
        stop = asyncio.Event()

        async def pump() -> None:
            """Rate-based: whatever the loop's hiccups, `drones / period` events a second."""
            rate = args.drones / args.period
            began = time.perf_counter()
            i = 0
            while not stop.is_set():
                due = int((time.perf_counter() - began) * rate)
                while i < due:
                    d = dict(snapshot.drones[i % args.drones])
                    d["metrics"] = {**d["metrics"], "cpu_percent": float((i * 7) % 100),
                                    "mem_used": (i * 13 % 100) * (64 << 30) // 100}
                    d["running"] = i % 3
                    source.events_queue.put_nowait(("drone", d))
                    i += 1
                app.log_view.append("stdout", b"live line %d\n" % i)
                await asyncio.sleep(0.02)
            results["events_sent"] = i

        pump_task = asyncio.create_task(pump())
        app.grid.focus()
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        keystrokes = []
        end = wall0 + args.seconds
        key = "down"
        while time.perf_counter() < end:
            row = app.grid.cursor_row
            start = time.perf_counter()
            app.post_message(events.Key(key, None))  # as the terminal driver delivers it
            while app.grid.cursor_row == row:
                await asyncio.sleep(0.001)
            await painted(app)
            keystrokes.append(time.perf_counter() - start)
            key = "up" if key == "down" and app.grid.cursor_row > 30 else "down"
            await asyncio.sleep(0.2)
        wall = time.perf_counter() - wall0
        results["cpu_percent"] = 100 * (time.process_time() - cpu0) / wall
        stop.set()
        await pump_task
        results["events_per_s"] = results["events_sent"] / wall
        results["keystroke_ms"] = (statistics.median(keystrokes) * 1000,
                                   sorted(keystrokes)[int(len(keystrokes) * 0.95)] * 1000)
        results["flush_ms"] = (statistics.median(flushes) * 1000, max(flushes) * 1000)
        results["grid_sorts"] = app.grid.sorts
        results["rss_mb"] = proc.memory_info().rss / 1e6
        results["rss_growth_mb"] = (proc.memory_info().rss - rss_before) / 1e6
        results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drones", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--period", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    for key, value in results.items():
        if isinstance(value, tuple):
            print(f"{key:18} median {value[0]:8.1f}  worst/p95 {value[1]:8.1f}")
        elif isinstance(value, float):
            print(f"{key:18} {value:10.2f}")
        else:
            print(f"{key:18} {value}")


if __name__ == "__main__":
    main()
