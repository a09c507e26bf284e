"""Where a tiny task's time goes: timestamps along the path of ``echo hi``, task by task.

Run: ``.venv/bin/python bench/trace_tiny_task.py [--tasks 30]``. Starts a real relay and
one real drone (as bench_table.py does), submits ``echo hi`` through the pilot's
``RelayClient`` N times, one after another, and for each task lines up, on the one
wall clock of this machine:

- ``submit``: the pilot calls ``submit`` (client clock);
- ``created`` / ``dispatched``: the relay stores the task / hands it to the drone's poll;
- ``started``: the wrapper's own clock when it started ``bash`` (pid.json);
- ``spawned``: the drone's log line "started (pid …)" (the wrapper wrote pid.json);
- ``exit``: the wrapper's clock when bash ended (exit.json; the relay's ``finished_at``);
- ``noticed``: the drone's log line "exited" (the wrapper's pidfd fired and exit.json was read);
- ``acked``: the drone's log line "finish acknowledged";
- ``eof``: the pilot has both streams to their end;
- ``done``: the pilot has the final task (exit status).

Prints the median and p90 of each step (ms from the previous one), the CPU each process
(relay; drone with its wrappers and tasks) spent per task, and per route the relay's own
mean time per request. The drone's log
lines carry milliseconds only, so those steps are ±1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "bench"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from bench_table import DRONE, SLOTS, TINY, _read_to_end, client_for  # noqa: E402

from tests.drone.conftest import Fleet  # noqa: E402
from tests.support.relay import RelayProcess  # noqa: E402
from tests.support.sealing import trust_drone  # noqa: E402

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ task (\S+): "
                  r"(started|exited|finish acknowledged)")
STEPS = ("submit", "created", "dispatched", "started", "spawned", "exit", "noticed", "acked",
         "eof", "done")


def drone_marks(log_text: str) -> dict[str, dict[str, float]]:
    marks: dict[str, dict[str, float]] = {}
    for line in log_text.splitlines():
        found = LINE.match(line)
        if found:
            stamp = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            name = {"started": "spawned", "exited": "noticed",
                    "finish acknowledged": "acked"}[found[3]]
            marks.setdefault(found[2], {})[name] = stamp
    return marks


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU of each process, children (the drone's wrappers, bash) included
    once they were waited for, so the drone's figure holds what it spawned."""
    out = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        out[name] = times.user + times.system + times.children_user + times.children_system
    return out


async def trace(relay: RelayProcess, fleet: Fleet, count: int) -> list[dict[str, float]]:
    rows = []
    pids = {"relay": relay.process.pid if relay.process else 0,
            "drone": fleet.drones[0].process.pid if fleet.drones[0].process else 0}
    async with client_for(relay, fleet.pilot) as client:
        for number in range(count + 3):
            if number == 3:  # the first three warm up
                cpu_before, wall_before = cpu_seconds(pids), time.perf_counter()
            mark: dict[str, float] = {"submit": time.time()}
            task = await client.submit(spec={"command": TINY}, drone=DRONE)
            await asyncio.gather(_read_to_end(client, task["id"], "stdout"),
                                 _read_to_end(client, task["id"], "stderr"))
            mark["eof"] = time.time()
            ended = await client.task(task_id=task["id"])
            mark["done"] = time.time()
            mark.update(created=ended["created_at"], dispatched=ended["dispatched_at"] or 0,
                        started=ended["started_at"] or 0, exit=ended["finished_at"] or 0)
            rows.append({"id": task["id"], **mark})  # type: ignore[dict-item]
        cpu_after, wall = cpu_seconds(pids), time.perf_counter() - wall_before
    for name in pids:
        cpu_per_task[name] = (cpu_after[name] - cpu_before[name]) / count * 1000
    cpu_per_task["wall"] = wall / count * 1000
    await asyncio.sleep(0.5)  # the drone's last log lines
    server_side.update(route_means(relay.url))
    marks = drone_marks(fleet.drones[0].log_text())
    for row in rows:
        row.update(marks.get(str(row["id"]), {}))
    return rows[3:]  # the first three warm up


server_side: dict[str, tuple[int, float]] = {}
cpu_per_task: dict[str, float] = {}  # ms of CPU per task, per process; "wall": ms per task
HISTOGRAM_LINE = re.compile(
    r"dragoon_relay_http_request_duration_seconds_(sum|count)\{(.*)\} (\S+)")


def route_means(url: str) -> dict[str, tuple[int, float]]:
    """Per route: how many requests the relay served and their mean time inside the relay
    (its own request histogram, outermost middleware to the last byte), from ``/metrics``."""
    import httpx

    text = httpx.get(f"{url}/metrics").text  # the bench relay listens on plain loopback
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        found = HISTOGRAM_LINE.match(line)
        if found:
            route = re.search(r'route="([^"]*)"', found[2])
            method = re.search(r'method="([^"]*)"', found[2])
            key = f"{method[1] if method else ''} {route[1] if route else ''}"
            (sums if found[1] == "sum" else counts)[key] = (
                (sums if found[1] == "sum" else counts).get(key, 0.0) + float(found[3]))
    return {key: (int(counts[key]), sums[key] / counts[key] * 1000)
            for key in counts if counts[key]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dragoon-trace-") as tmp, \
            RelayProcess(Path(tmp) / "relay") as relay:
        fleet = Fleet(Path(tmp), relay, relay.pilot("bench"))
        drone = fleet.drone(DRONE, slots=SLOTS, poll_wait=25.0)
        trust_drone(fleet.pilot.env, drone.data_dir)  # as `dragoon drones trust` would
        try:
            rows = asyncio.run(trace(relay, fleet, args.tasks))
        finally:
            fleet.close()
            relay.kill9()
    print(f"{args.tasks} tasks `{TINY}`, one after another; ms from the previous step\n")
    print("| step | median | p90 |")
    print("|---|---:|---:|")
    for before, after in itertools.pairwise(STEPS):
        gaps = sorted((r[after] - r[before]) * 1000 for r in rows if before in r and after in r)
        if gaps:
            print(f"| {before} → {after} | {gaps[len(gaps) // 2]:.1f} | "
                  f"{gaps[min(len(gaps) - 1, round(0.9 * (len(gaps) - 1)))]:.1f} |")
    # Spans: started → acked is what the runner adds once the task runs (the exit noticed,
    # the streams' tails and the finish acknowledged).
    for before, after in (("started", "acked"), ("submit", "done")):
        span = sorted((r[after] - r[before]) * 1000 for r in rows if before in r and after in r)
        print(f"| {before} → {after} (span) | {span[len(span) // 2]:.1f} | "
              f"{span[min(len(span) - 1, round(0.9 * (len(span) - 1)))]:.1f} |")
    print(f"\nCPU per task (ms, {args.tasks} tasks after the warm-up): "
          + ", ".join(f"{name} {ms:.1f}" for name, ms in cpu_per_task.items()))
    print("\nInside the relay, per route (all requests of the run, warm-up included)\n")
    print("| route | requests | mean ms |")
    print("|---|---:|---:|")
    for key, (count, mean) in sorted(server_side.items(), key=lambda kv: -kv[1][0]):
        print(f"| {key} | {count} | {mean:.2f} |")


if __name__ == "__main__":
    main()
