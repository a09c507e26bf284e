"""Jobs across a fleet: fan-out and sweeps, timed on real drone processes (issue 14).

Run from the checkout::

    .venv/bin/python bench/bench_jobs.py [--quick] [--json FILE]

It starts a real relay (``dragoon relay serve`` on loopback) and real drone processes
(``dragoon drone join`` + ``drone run``), each trusted by the pilot as ``dragoon drones
trust`` would, and measures through the pilot's own ``RelayClient`` (the one the CLI and
the cockpit use), in-process:

- **fan-out**: ``echo hi`` as one job on every one of N drones (10, then 50, one slot
  each), from the submit call to every task's output *and* exit status back (each stdout
  followed to its end, as ``dragoon run --each`` does, then the job read once): the figure
  Salt's ``salt '*' cmd.run 'echo hi'`` gives, median of a few runs;
- **sweep**: 500 trials of ``true`` over 20 drones with 2 slots each (labels ``gpu``):
  the time ``submit_job`` takes (sealing, signing, the chunked POSTs) and the time until
  the job is final, read from the job's own view;
- **queued**: 20 sweeps of 500 trials (10,000 queued tasks) for drones that are enrolled
  and trusted but not running, while 20 other drones long-poll: the relay's RSS before and
  after, its CPU over an idle window with the queue full, and what one of those drones' poll
  costs the relay (the placement pass over 20 jobs it cannot take).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "bench"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import bench_relay  # noqa: E402
from dragoon.cockpit.client import RelayClient, TrialSubmit  # noqa: E402
from dragoon.shared.jobs import new_job_id  # noqa: E402

from tests.drone.conftest import Fleet  # noqa: E402
from tests.support.relay import PilotSession, RelayProcess  # noqa: E402
from tests.support.sealing import trust_drone  # noqa: E402

FINAL_JOB = {"succeeded", "failed", "partly_failed", "cancelled"}


@dataclass
class Counts:
    fanouts: tuple[int, ...]
    fanout_runs: int
    sweep_trials: int
    sweep_drones: int
    queued_jobs: int
    queued_trials: int
    idle_seconds: float


FULL = Counts(fanouts=(10, 50), fanout_runs=5, sweep_trials=500, sweep_drones=20,
              queued_jobs=20, queued_trials=500, idle_seconds=30.0)
QUICK = Counts(fanouts=(5,), fanout_runs=2, sweep_trials=60, sweep_drones=4,
               queued_jobs=2, queued_trials=100, idle_seconds=5.0)


def client_for(relay: RelayProcess, pilot: PilotSession) -> RelayClient:
    """The pilot's own client, with the pilot's env: its known_drones and encryption key."""
    return RelayClient(relay.url, signer=pilot.signer, token=pilot.token, env=pilot.env)


def start_drones(fleet: Fleet, pilot: PilotSession, names: list[str], *,
                 labels: tuple[str, ...] = (), slots: int = 1, start: bool = True) -> None:
    for name in names:
        drone = fleet.drone(name, labels=labels, slots=slots, start=start, poll_wait=25.0)
        trust_drone(pilot.env, drone.data_dir)  # as `dragoon drones trust` would


def wait_online(relay: RelayProcess, count: int, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in httpx.get(f"{relay.url}/metrics").text.splitlines():
            if line.startswith('dragoon_relay_drones{state="online"}') and \
                    int(float(line.split()[1])) >= count:
                return
        time.sleep(0.2)
    raise RuntimeError(f"fewer than {count} drones came online")


async def _stdout(client: RelayClient, task_id: str) -> bytes:
    data = b""
    async for chunk in client.follow_log(task_id=task_id, stream="stdout"):
        data += chunk.data
    return data


async def _until_final(client: RelayClient, job_id: str) -> dict[str, Any]:
    while True:
        job = await client.job(job_id)
        if job["state"] in FINAL_JOB:
            return dict(job)
        await asyncio.sleep(0.05)


async def fanout_once(client: RelayClient, drones: list[str]) -> float:
    started = time.perf_counter()
    job_id = new_job_id()
    trials = [TrialSubmit(trial=i, spec={"command": "echo hi"}, drone=name)
              for i, name in enumerate(drones)]
    submitted = await client.submit_job(job_id, name="bench fan-out", kind="fanout",
                                        trials=trials)
    outputs = await asyncio.gather(*(_stdout(client, t["id"]) for t in submitted.tasks))
    job = await _until_final(client, job_id)
    elapsed = time.perf_counter() - started
    if any(out != b"hi\n" for out in outputs) or job["counts"]["succeeded"] != len(drones):
        raise RuntimeError(f"fan-out went wrong: {outputs[:3]} {job}")
    return elapsed


def cpu_seconds(pid: int) -> float:
    """A process's CPU time with that of the children it has reaped (a drone's tasks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def fanout(work: Path, count: int, runs: int) -> dict[str, float]:
    """The fan-out's wall time, and its CPU per task by part: relay, drones (with their
    tasks), and the client; their sum over the cores is the floor under the wall time."""
    with RelayProcess(work / f"fanout-{count}") as relay:
        pilot = relay.pilot("bench")
        fleet = Fleet(work / f"fanout-{count}-drones", relay, pilot)
        names = [f"f{i:02d}" for i in range(count)]
        try:
            start_drones(fleet, pilot, names)
            wait_online(relay, count)
            time.sleep(3.0)  # the last drones' start-up settles

            assert relay.process is not None
            pids = {"relay": [relay.process.pid],
                    "drones": [d.process.pid for d in fleet.drones if d.process]}

            def cpu() -> dict[str, float]:
                return {**{part: sum(cpu_seconds(p) for p in group)
                           for part, group in pids.items()}, "client": time.process_time()}

            async def measure() -> tuple[list[float], dict[str, float]]:
                async with client_for(relay, pilot) as client:
                    await fanout_once(client, names)  # warm-up: connections, first imports
                    before = cpu()
                    times = [await fanout_once(client, names) for _ in range(runs)]
                    after = cpu()
                    return times, {k: after[k] - before[k] for k in after}

            times, used = asyncio.run(measure())
        finally:
            fleet.close()
            relay.kill9()
    per_task = {part: seconds / (runs * count) for part, seconds in used.items()}
    floor = sum(used.values()) / runs / (os.cpu_count() or 1)
    return {f"fanout_{count}_median_s": statistics.median(times),
            f"fanout_{count}_min_s": min(times), f"fanout_{count}_max_s": max(times),
            **{f"fanout_{count}_cpu_ms_per_task_{part}": 1000 * seconds
               for part, seconds in per_task.items()},
            f"fanout_{count}_cpu_floor_s": floor}


def sweep_trials(count: int, labels: list[str]) -> list[TrialSubmit]:
    return [TrialSubmit(trial=i, spec={"command": "true", "env": {
        "DRAGOON_TRIAL": str(i)}}, labels=labels) for i in range(count)]


def sweep(work: Path, counts: Counts) -> dict[str, float]:
    with RelayProcess(work / "sweep", config={"queued_per_pilot": 100_000}) as relay:
        pilot = relay.pilot("bench")
        fleet = Fleet(work / "sweep-drones", relay, pilot)
        names = [f"s{i:02d}" for i in range(counts.sweep_drones)]
        try:
            start_drones(fleet, pilot, names, labels=("gpu",), slots=2)
            wait_online(relay, len(names))
            time.sleep(3.0)

            async def measure() -> tuple[float, float, dict[str, Any]]:
                async with client_for(relay, pilot) as client:
                    await client.drones()  # the connection, as a warm CLI has it
                    job_id = new_job_id()
                    started = time.perf_counter()
                    await client.submit_job(job_id, name="bench sweep", kind="sweep",
                                            trials=sweep_trials(counts.sweep_trials, ["gpu"]))
                    submitted = time.perf_counter() - started
                    job = await _until_final(client, job_id)
                    return submitted, time.perf_counter() - started, job

            submit_s, total_s, job = asyncio.run(measure())
            if job["counts"]["succeeded"] != counts.sweep_trials:
                raise RuntimeError(f"sweep went wrong: {job}")
        finally:
            fleet.close()
            relay.kill9()
    return {"sweep_submit_s": submit_s, "sweep_total_s": total_s,
            "sweep_tasks_per_s": counts.sweep_trials / total_s}


def queued(work: Path, counts: Counts) -> dict[str, float]:
    config = {"queued_per_pilot": 100_000, "offline_after": 300}
    with RelayProcess(work / "queued", config=config) as relay:
        assert relay.process is not None
        pilot = relay.pilot("bench")
        fleet = Fleet(work / "queued-drones", relay, pilot)
        try:
            # The trials' drones: enrolled and trusted, never started, so the queue stays full.
            start_drones(fleet, pilot, [f"q{i:02d}" for i in range(20)], labels=("gpu",),
                         start=False)
            # Drones that long-poll and can take none of it: each poll is a placement pass.
            start_drones(fleet, pilot, [f"o{i:02d}" for i in range(20)], labels=("cpu",))
            wait_online(relay, 20)
            time.sleep(3.0)
            rss_before, _ = bench_relay._proc_stat(relay.process.pid)

            async def fill() -> float:
                async with client_for(relay, pilot) as client:
                    started = time.perf_counter()
                    for _ in range(counts.queued_jobs):
                        await client.submit_job(new_job_id(), name="queued", kind="sweep",
                                                trials=sweep_trials(counts.queued_trials,
                                                                    ["gpu"]))
                    return time.perf_counter() - started

            fill_s = asyncio.run(fill())
            time.sleep(3.0)
            rss_after, cpu_start = bench_relay._proc_stat(relay.process.pid)
            clock = time.monotonic()
            time.sleep(counts.idle_seconds)
            _, cpu_end = bench_relay._proc_stat(relay.process.pid)
            share = (cpu_end - cpu_start) / (time.monotonic() - clock)
        finally:
            fleet.close()
            relay.kill9()
    queued_tasks = counts.queued_jobs * counts.queued_trials
    return {"queued_tasks": queued_tasks, "queued_fill_s": fill_s,
            "queued_rss_before_mib": rss_before / 2**20, "queued_rss_after_mib": rss_after / 2**20,
            "queued_idle_cpu_percent": share * 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, a smoke run")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--only", choices=["fanout", "sweep", "queued"], action="append")
    args = parser.parse_args()
    counts = QUICK if args.quick else FULL
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        work = Path(tmp)
        if not args.only or "fanout" in args.only:
            for count in counts.fanouts:
                print(f"fan-out to {count} drones …", file=sys.stderr, flush=True)
                results.update(fanout(work, count, counts.fanout_runs))
        if not args.only or "sweep" in args.only:
            print("sweep …", file=sys.stderr, flush=True)
            results.update(sweep(work, counts))
        if not args.only or "queued" in args.only:
            print("queued jobs …", file=sys.stderr, flush=True)
            results.update(queued(work, counts))
    for key, value in results.items():
        print(f"{key:32} {value:10.3f}" if isinstance(value, float) else f"{key:32} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
