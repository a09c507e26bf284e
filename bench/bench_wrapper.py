"""Throughput of the task wrapper alone: a task writes N bytes to stdout as fast as it can.

Run: ``.venv/bin/python bench/bench_wrapper.py [--megabytes 1024] [--rounds 3]``. Starts
``drone/wrapper.py`` exactly as the drone does (``python -I -S``) on a temporary task dir
with ``yes | head -c N`` (with ``--mixed``, half on stdout and half on stderr at the same
time), and prints the best round's MB/s: the wrapper's own ceiling, to
compare with the drone's shipping rate (docs/benchmarks.md, ## Drone).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRAPPER = Path(__file__).resolve().parents[1] / "drone" / "wrapper.py"


def one_round(command: str, size: int, wrapper: Path) -> tuple[float, float]:
    """(MB/s, CPU seconds of the wrapper and everything it waited for, per GB)."""
    with tempfile.TemporaryDirectory(prefix="bench-wrapper-") as tmp:
        task = Path(tmp)
        (task / "launch.json").write_text(json.dumps({"command": command, "cwd": tmp}))
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-I", "-S", str(wrapper), tmp])
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - start
        if process.returncode:
            raise SystemExit(f"the wrapper exited {process.returncode}")
        held = sum((task / name).stat().st_size for name in ("stdout", "stderr"))
        if held < size:
            raise SystemExit(f"the spool holds {held} bytes, expected {size}")
        return size / elapsed / 1e6, (usage.ru_utime + usage.ru_stime) / (size / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wrapper", type=Path, default=WRAPPER,
                        help="another wrapper.py to compare with (an older checkout's)")
    parser.add_argument("--mixed", action="store_true",
                        help="half on stdout, half on stderr, written at the same time")
    args = parser.parse_args()
    size = args.megabytes << 20
    if args.mixed:
        half = size // 2
        command = f"yes | head -c {half} & yes | head -c {half} >&2; wait"
    else:
        command = f"yes | head -c {size}"
    rounds = [one_round(command, size, args.wrapper) for _ in range(args.rounds)]
    rates = [rate for rate, _cpu in rounds]
    print(json.dumps({"megabytes": args.megabytes, "mixed": args.mixed,
                      "best_mb_s": round(max(rates), 1),
                      "rounds_mb_s": [round(r, 1) for r in rates],
                      "cpu_s_per_gb": round(min(cpu for _rate, cpu in rounds), 2),
                      "load": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
