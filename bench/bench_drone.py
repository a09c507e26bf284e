"""Drone benchmarks against a real relay on loopback: idle cost, latencies, output throughput.

Run: ``.venv/bin/python bench/bench_drone.py [--gigabytes 1] [--tasks 50]``. Prints one
JSON document and a Markdown table (the figures of docs/benchmarks.md, ## Drone).

- idle RSS and CPU of ``dragoon drone run`` holding its long-poll, no task;
- submit → process start: the pilot's clock at submit vs the task's first ``date``;
- first byte: a task prints its own clock; the pilot follows the log (long-poll)
  and notes when each line arrives;
- throughput: a task writes N GB to stdout as fast as it can; time from its start
  to the relay holding every byte, and the drone's peak RSS meanwhile.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.drone.conftest import Fleet
from tests.support import records
from tests.support.relay import RelayProcess


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def idle(drone_pid: int, seconds: float) -> dict[str, float]:
    proc = psutil.Process(drone_pid)
    time.sleep(2.0)  # let start-up settle: imports, first poll
    before = proc.cpu_times()
    start = time.monotonic()
    time.sleep(seconds)
    after = proc.cpu_times()
    elapsed = time.monotonic() - start
    cpu = (after.user + after.system) - (before.user + before.system)
    return {"idle_rss_mb": proc.memory_info().rss / 1e6,
            "idle_cpu_percent": 100 * cpu / elapsed}


def submit_to_start(fleet: Fleet, count: int) -> dict[str, float]:
    latencies = []
    for _ in range(count):
        submitted = time.time()
        task_id = fleet.submit("date +%s.%N", drone="bench")
        fleet.wait_state(task_id, timeout=30)
        started = float(fleet.output(task_id).decode().strip())
        latencies.append((started - submitted) * 1000)
    return {"start_p50_ms": percentile(latencies, 50), "start_p99_ms": percentile(latencies, 99),
            "start_n": count}


def first_byte(fleet: Fleet, lines: int) -> dict[str, float]:
    command = (f"for i in $(seq 1 {lines}); do date +%s.%N; sleep 0.1; done")
    task_id = fleet.submit(command, drone="bench")
    latencies: list[float] = []
    offset = 0
    buffer = b""
    opener = records.reader(records.task_key(fleet.pilot, task_id), task_id, "stdout")
    deadline = time.monotonic() + 60
    while len(latencies) < lines and time.monotonic() < deadline:
        answer = fleet.pilot.get(f"/v1/tasks/{task_id}/log",
                                 params={"stream": "stdout", "offset": offset, "wait": 5},
                                 timeout=30)
        arrived = time.time()  # opened at once: the records cost the pilot microseconds
        offset += len(answer.content)
        buffer += opener.feed(answer.content)
        *complete, buffer = buffer.split(b"\n")
        latencies.extend((arrived - float(stamp)) * 1000 for stamp in complete if stamp)
    fleet.wait_state(task_id)
    return {"first_byte_p50_ms": percentile(latencies, 50),
            "first_byte_p99_ms": percentile(latencies, 99), "first_byte_n": len(latencies)}


def throughput(fleet: Fleet, drone_pid: int, gigabytes: float) -> dict[str, float]:
    size = int(gigabytes * (1 << 30))
    proc = psutil.Process(drone_pid)
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before = sum(proc.cpu_times()[:2])
    submitted = time.monotonic()
    task_id = fleet.submit(f"head -c {size} /dev/zero", drone="bench", timeout=3600)
    task = fleet.wait_state(task_id, timeout=900)
    wall = time.monotonic() - submitted  # final state: the relay holds every byte
    stop.set()
    sampler.join()
    # Stored bytes: the plaintext and 57 bytes a record of at most 256 KiB.
    assert task["stdout_size"] >= size + -(-size // (256 << 10)) * 57, task
    return {"throughput_bytes": size, "throughput_wall_seconds": wall,
            "task_seconds": task["finished_at"] - task["started_at"],
            "end_to_end_mb_s": size / 1e6 / wall, "drone_peak_rss_mb": peak[0] / 1e6,
            "drone_cpu_seconds_per_gb": (sum(proc.cpu_times()[:2]) - cpu_before)
            / (size / 1e9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dragoon-bench-"))
    results: dict[str, Any] = {}
    with RelayProcess(root / "relay", config={"output_cap": 8 << 30}) as relay:
        fleet = Fleet(root, relay, relay.pilot("bench"))
        drone = fleet.drone("bench", poll_wait=25.0)
        try:
            assert drone.process is not None
            pid = drone.process.pid
            results.update(idle(pid, args.idle_seconds))
            results.update(submit_to_start(fleet, args.tasks))
            results.update(first_byte(fleet, 30))
            results.update(throughput(fleet, pid, args.gigabytes))
        finally:
            fleet.close()
            relay.kill9()
    print(json.dumps(results, indent=2))
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| idle drone RSS | {results['idle_rss_mb']:.1f} MB |")
    print(f"| idle drone CPU | {results['idle_cpu_percent']:.2f} % of one core |")
    print(f"| submit → process start, p50 / p99 | {results['start_p50_ms']:.0f} ms / "
          f"{results['start_p99_ms']:.0f} ms (n={results['start_n']}) |")
    print(f"| task write → relay (first byte), p50 / p99 | {results['first_byte_p50_ms']:.0f} ms / "
          f"{results['first_byte_p99_ms']:.0f} ms |")
    print(f"| output end to end ({args.gigabytes:g} GB) | {results['end_to_end_mb_s']:.0f} MB/s |")
    print(f"| drone peak RSS during it | {results['drone_peak_rss_mb']:.1f} MB |")
    print(f"| drone CPU per GB shipped | {results['drone_cpu_seconds_per_gb']:.1f} s |")


if __name__ == "__main__":
    main()
