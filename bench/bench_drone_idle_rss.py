"""The drone's idle RSS alone, over fresh relay + drone pairs: bench_table.py's figure, repeated.

bench_table.py measures the idle drone once, among many other figures; this runs only that
measurement (its ``drone_idle`` function, the same drone set-up as its ``task_path``), ``--runs``
times, each with a fresh relay and drone process, and prints every run and the median, so
that a change to what an idle drone imports can be measured before/after in a few minutes.

    .venv/bin/python bench/bench_drone_idle_rss.py [--runs 5] [--seconds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "bench"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import bench_table  # noqa: E402

from tests.drone.conftest import Fleet  # noqa: E402
from tests.support.relay import RelayProcess  # noqa: E402


def one_run(work: Path, seconds: float) -> float:
    """One fresh relay and drone (as bench_table.task_path starts them); the drone's idle MiB."""
    with RelayProcess(work / "relay") as relay:
        fleet = Fleet(work, relay, relay.pilot("bench"))
        drone = fleet.drone(bench_table.DRONE, slots=bench_table.SLOTS, poll_wait=25.0)
        try:
            assert drone.process is not None
            return bench_table.drone_idle(drone.process.pid, seconds)["drone_idle_rss_mib"]
        finally:
            fleet.close()
            relay.kill9()  # a graceful stop waits on held long-polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="idle window per run")
    args = parser.parse_args()
    bench_table.compile_bytecode()
    figures = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="dragoon-bench-idle-rss-") as tmp:
            figures.append(one_run(Path(tmp), args.seconds))
        print(f"run {run + 1}: {figures[-1]:.1f} MiB", flush=True)
    print(f"drone idle RSS, median of {len(figures)}: {statistics.median(figures):.1f} MiB")


if __name__ == "__main__":
    main()
