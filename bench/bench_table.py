"""The task-path table: every figure of the "milliseconds per task" work, in one command.

Run from the checkout::

    .venv/bin/python bench/bench_table.py [--quick] [--json FILE]

It starts a real relay (``dragoon relay serve`` on loopback, tests/support/relay.py's
``RelayProcess``) and one real drone process (``dragoon drone join`` + ``drone run``,
8 slots, the long-poll held 25 s), logs a pilot in, and measures, one function per
figure:

- tiny task: ``echo hi`` submitted through the pilot's own ``RelayClient``
  (cockpit/client, the one the CLI and the cockpit use), in-process; time from
  the submit call to the output *and* the exit status being back (both streams
  followed to their end, then the task read), p50 / p99 over N runs;
- 200 tiny tasks one after another (tasks/s);
- 200 tiny tasks with at most 4 in flight (tasks/s);
- 200 tiny tasks submitted at once (8 client connections submitting as fast as
  they can), one drone with 8 slots: tasks/s to the last exit status, and the
  worst wait from the relay taking the submit to the drone reporting the start
  (``started_at - created_at``, both the relay's clock);
- ``dragoon run DRONE -- 'echo hi'`` as a whole process (median wall ms);
- CLI start-up: ``dragoon --version`` as a whole process (median wall ms);
- the drone's idle RSS (MiB) and CPU % of one core over an idle window (psutil);
- relay idle CPU with 50 drones long-polling: 50 *in-process* long-polling
  clients (bench_relay.py's, each holding ``POST /v1/worker/poll`` with
  ``wait=25`` and re-polling, signed, as a drone does), not 50 drone processes;
- signed / unsigned throughput on ``GET /v1/tasks/{id}`` and the relay's log
  append rate with 64 KiB chunks: bench_relay.py's own measurements, reused.

``--quick`` shrinks every count for a smoke run (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "bench"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import bench_drone  # noqa: E402
import bench_relay  # noqa: E402
from bench_cli import timed  # noqa: E402
from dragoon.cockpit.client import RelayClient  # noqa: E402
from dragoon.shared.trust import (  # noqa: E402
    pilot_keys_from,
    read_authorized_pilots,
    write_authorized_pilots,
)

from tests.drone.conftest import Fleet  # noqa: E402
from tests.support.relay import (  # noqa: E402
    PilotSession,
    RelayProcess,
    fresh_totp,
    new_signer,
)
from tests.support.sealing import trust_drone  # noqa: E402

DRONE = "bench"
SLOTS = 8
TINY = "echo hi"
FINAL = {"succeeded", "failed", "cancelled", "lost", "expired", "timed_out"}


@dataclass
class Counts:
    latency_runs: int
    tasks: int
    cli_runs: int
    idle_seconds: float
    idle_drones: int
    signed_requests: int
    append_megabytes: int


FULL = Counts(latency_runs=200, tasks=200, cli_runs=20, idle_seconds=30.0, idle_drones=50,
              signed_requests=4000, append_megabytes=256)
QUICK = Counts(latency_runs=20, tasks=40, cli_runs=3, idle_seconds=5.0, idle_drones=50,
               signed_requests=1000, append_megabytes=32)


# --- the pilot's in-process path ---------------------------------------------------------------


async def _read_to_end(client: RelayClient, task_id: str, stream: str) -> bytes:
    data = b""
    async for chunk in client.follow_log(task_id=task_id, stream=stream):
        data += chunk.data
    return data


async def one_task(client: RelayClient) -> tuple[float, dict[str, Any]]:
    """Submit ``echo hi`` and wait, as ``dragoon run`` does: both streams to EOF, then the task."""
    started = time.perf_counter()
    task = await client.submit(spec={"command": TINY}, drone=DRONE)
    out, _err = await asyncio.gather(_read_to_end(client, task["id"], "stdout"),
                                     _read_to_end(client, task["id"], "stderr"))
    ended = await client.task(task_id=task["id"])
    elapsed = time.perf_counter() - started
    if out != b"hi\n" or ended["exit_code"] != 0:
        raise RuntimeError(f"tiny task went wrong: {out!r} {dict(ended)}")
    return elapsed, dict(ended)


def client_for(relay: RelayProcess, pilot: PilotSession) -> RelayClient:
    """The pilot's own client, with the pilot's env: its known_drones and encryption key."""
    return RelayClient(relay.url, signer=pilot.signer, token=pilot.token, env=pilot.env)


def percentile(values: list[float], fraction: float) -> float:
    return bench_relay.percentile(values, fraction)


# --- one function per figure -------------------------------------------------------------------


async def tiny_latency(relay: RelayProcess, pilot: PilotSession, runs: int) -> dict[str, float]:
    async with client_for(relay, pilot) as client:
        for _ in range(3):  # warm-up: connection, first imports on the drone side
            await one_task(client)
        ms = [(await one_task(client))[0] * 1000 for _ in range(runs)]
    return {"tiny_p50_ms": percentile(ms, 0.5), "tiny_p99_ms": percentile(ms, 0.99),
            "tiny_runs": runs}


async def windowed(relay: RelayProcess, pilot: PilotSession, total: int,
                   window: int) -> dict[str, float]:
    """``total`` tiny tasks, at most ``window`` in flight (one client connection each)."""
    remaining = list(range(total))

    async def worker() -> None:
        async with client_for(relay, pilot) as client:
            while remaining:
                remaining.pop()
                await one_task(client)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(window)))
    return {f"window{window}_tasks_per_s": total / (time.perf_counter() - started)}


async def burst(relay: RelayProcess, pilot: PilotSession, total: int) -> dict[str, float]:
    """``total`` submits at once, then every task's output and exit status collected."""
    clients = [client_for(relay, pilot) for _ in range(SLOTS)]
    try:
        started = time.perf_counter()

        async def submit_some(client: RelayClient, count: int) -> list[str]:
            return [(await client.submit(spec={"command": TINY}, drone=DRONE))["id"]
                    for _ in range(count)]

        shares = [total // SLOTS + (1 if i < total % SLOTS else 0) for i in range(SLOTS)]
        ids = [i for part in await asyncio.gather(
            *(submit_some(c, n) for c, n in zip(clients, shares, strict=True))) for i in part]
        submitted = time.perf_counter() - started

        async def collect(client: RelayClient, mine: list[str]) -> list[dict[str, Any]]:
            done = []
            for task_id in mine:
                out = await _read_to_end(client, task_id, "stdout")
                task = dict(await client.task(task_id=task_id))
                if out != b"hi\n" or task["exit_code"] != 0:
                    raise RuntimeError(f"burst task went wrong: {out!r} {task}")
                done.append(task)
            return done

        tasks = [t for part in await asyncio.gather(
            *(collect(c, ids[k::SLOTS]) for k, c in enumerate(clients))) for t in part]
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    waits = [t["started_at"] - t["created_at"] for t in tasks]
    return {"burst_tasks_per_s": total / elapsed, "burst_worst_wait_s": max(waits),
            "burst_submit_s": submitted}


def logged_in_cli(root: Path, relay: RelayProcess,
                  env_extra: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``dragoon`` command and an environment of its own home, logged in to ``relay``."""
    home = root / "cli-home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DRAGOON_") and k != "SSH_AUTH_SOCK"}
    env.update({"HOME": str(home), "XDG_STATE_HOME": str(home / "state"),
                "XDG_CONFIG_HOME": str(home / "config"), **(env_extra or {})})
    dragoon = [sys.executable, "-m", "dragoon"]
    key = home / ".ssh" / "id_ed25519"
    new_signer(key)
    secret = relay.add_operator("bench-cli", Path(f"{key}.pub"))
    subprocess.run([*dragoon, "login", "--relay", relay.url, "--key", str(key),
                    "--totp", fresh_totp(secret)], env=env, check=True, capture_output=True)
    return dragoon, env


def cli_whole_process(root: Path, relay: RelayProcess, runs: int,
                      drone_data: Path | None = None) -> dict[str, float]:
    """``dragoon run`` and ``dragoon --version`` as the user starts them, wall time. The
    CLI's pilot is authorized on the drone of ``drone_data`` and knows it, as on a box where
    `dragoon drone authorize` and `dragoon drones trust` were run."""
    dragoon, env = logged_in_cli(root, relay)
    if drone_data is not None:
        key = Path(env["HOME"]) / ".ssh" / "id_ed25519.pub"
        path = drone_data / "authorized_pilots"
        write_authorized_pilots(path, [*read_authorized_pilots(path), *pilot_keys_from(
            str(key))])
        trust_drone(env, drone_data)

    def median_ms(argv: list[str]) -> float:
        timed(argv, env, expect=0)  # warm-up
        return statistics.median(timed(argv, env, expect=0) for _ in range(runs)) * 1000

    return {"run_whole_ms": median_ms([*dragoon, "run", DRONE, "--", TINY]),
            "cli_version_ms": median_ms([*dragoon, "--version"]), "cli_runs": runs}


def drone_idle(drone_pid: int, seconds: float) -> dict[str, float]:
    measured = bench_drone.idle(drone_pid, seconds)  # psutil; its RSS is in 10^6 bytes
    return {"drone_idle_rss_mib": measured["idle_rss_mb"] * 1e6 / 2**20,
            "drone_idle_cpu_percent": measured["idle_cpu_percent"]}


def relay_idle(work: Path, drones: int, seconds: float) -> dict[str, float]:
    config = {"offline_after": 300, "open_burst_per_peer": 0, "open_burst_total": 0}
    with RelayProcess(work / "idle", config=config) as relay:
        assert relay.process is not None
        _rss, cpu, online, _before = asyncio.run(bench_relay._idle_drones(
            relay.url, relay.pilot("bench"), drones, relay.process.pid, seconds))
    return {"relay_idle_cpu_percent": cpu * 100, "relay_idle_drones_online": online}


def relay_idle_real(work: Path, drones: int, seconds: float) -> dict[str, float]:
    """The same figure with ``drones`` real ``dragoon drone run`` processes (~45 MiB each)."""
    import httpx

    config = {"offline_after": 300, "open_burst_per_peer": 0, "open_burst_total": 0}
    with RelayProcess(work / "idle-real", config=config) as relay:
        assert relay.process is not None
        fleet = Fleet(work / "idle-real-drones", relay, relay.pilot("bench"))
        try:
            for i in range(drones):
                fleet.drone(f"idle-{i:02d}", poll_wait=25.0)

            def online() -> int:
                for line in httpx.get(f"{relay.url}/metrics").text.splitlines():
                    if line.startswith('dragoon_relay_drones{state="online"}'):
                        return int(float(line.split()[1]))
                return 0

            deadline = time.monotonic() + 300
            while online() < drones and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(5.0)  # the last drones' start-up settles
            _, cpu_start = bench_relay._proc_stat(relay.process.pid)
            clock = time.monotonic()
            time.sleep(seconds)
            _, cpu_end = bench_relay._proc_stat(relay.process.pid)
            share = (cpu_end - cpu_start) / (time.monotonic() - clock)
            count = online()
        finally:
            fleet.close()
            relay.kill9()
    return {"relay_idle_real_cpu_percent": share * 100, "relay_idle_real_drones_online": count}


def signed_ratio(work: Path, requests: int) -> dict[str, float]:
    rows = dict((label, value) for label, value, _ in bench_relay.bench_signed(work, requests))
    return {"signed_unsigned_ratio": float(rows["signed / unsigned throughput"])}


def log_append(work: Path, megabytes: int) -> dict[str, float]:
    with RelayProcess(work / "output") as relay:
        rate = asyncio.run(bench_relay._append(relay.url, relay.pilot("bench"), megabytes,
                                               bench_relay.CHUNK))
    return {"append_mb_s": rate}


# --- the table ---------------------------------------------------------------------------------


def task_path(work: Path, counts: Counts) -> dict[str, Any]:
    """The figures that need the relay + drone + pilot of one run."""
    results: dict[str, Any] = {}
    with RelayProcess(work / "relay", config={"output_cap": 1 << 30}) as relay:
        pilot = relay.pilot("bench")
        fleet = Fleet(work, relay, pilot)
        drone = fleet.drone(DRONE, slots=SLOTS, poll_wait=25.0)
        trust_drone(pilot.env, drone.data_dir)  # as `dragoon drones trust` would
        try:
            assert drone.process is not None
            steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                ("drone idle", lambda: drone_idle(drone.process.pid, counts.idle_seconds)),
                ("tiny task latency", lambda: asyncio.run(
                    tiny_latency(relay, pilot, counts.latency_runs))),
                ("sequential", lambda: {"sequential_tasks_per_s": asyncio.run(
                    windowed(relay, pilot, counts.tasks, 1))["window1_tasks_per_s"]}),
                ("window 4", lambda: asyncio.run(windowed(relay, pilot, counts.tasks, 4))),
                ("burst", lambda: asyncio.run(burst(relay, pilot, counts.tasks))),
                ("CLI", lambda: cli_whole_process(work, relay, counts.cli_runs,
                                                  drone.data_dir)),
            ]
            for name, step in steps:
                print(f"running {name} …", file=sys.stderr, flush=True)
                results.update(step())
        finally:
            fleet.close()
            relay.kill9()  # a graceful stop waits on held long-polls
    return results


def rows(r: dict[str, Any], counts: Counts) -> list[tuple[str, str, str]]:
    n = counts.tasks
    return [
        (f"tiny task submit → output + exit, in-process, p50 (n={r['tiny_runs']})",
         f"{r['tiny_p50_ms']:.0f} ms", "≤ 15 ms"),
        ("tiny task, p99", f"{r['tiny_p99_ms']:.0f} ms", "≤ 40 ms"),
        (f"{n} tiny tasks one after another, one drone", f"{r['sequential_tasks_per_s']:.1f}/s",
         "≥ 60/s"),
        (f"{n} tiny tasks, at most 4 in flight", f"{r['window4_tasks_per_s']:.1f}/s", "≥ 100/s"),
        (f"{n} tiny tasks at once, 1 drone, {SLOTS} slots",
         f"{r['burst_tasks_per_s']:.1f}/s", "≥ 100/s"),
        ("  worst wait submit → start", f"{r['burst_worst_wait_s']:.2f} s", "≤ 2 s"),
        ("`dragoon run d -- 'echo hi'`, whole process, median", f"{r['run_whole_ms']:.0f} ms",
         "≤ 200 ms"),
        ("CLI start-up `dragoon --version`, median", f"{r['cli_version_ms']:.0f} ms", "≤ 80 ms"),
        ("drone idle RSS", f"{r['drone_idle_rss_mib']:.1f} MiB", "≤ 35 MiB"),
        (f"drone idle CPU ({counts.idle_seconds:.0f} s)",
         f"{r['drone_idle_cpu_percent']:.2f} %", "≤ 0.05 %"),
        (f"relay idle CPU, {r['relay_idle_drones_online']} in-process drones long-polling",
         f"{r['relay_idle_cpu_percent']:.2f} %", "≤ 0.5 %"),
        *([(f"relay idle CPU, {r['relay_idle_real_drones_online']} real drone processes",
            f"{r['relay_idle_real_cpu_percent']:.2f} %", "≤ 0.5 %")]
          if "relay_idle_real_cpu_percent" in r else []),
        ("signed / unsigned throughput, GET /v1/tasks/{id}",
         f"{r['signed_unsigned_ratio']:.2f}", "≥ 0.5"),
        ("relay log append, 64 KiB chunks", f"{r['append_mb_s']:.0f} MB/s", "≥ 100 MB/s"),
    ]


def compile_bytecode() -> None:
    """Byte-compile the checkout first, as ``pip install`` does for a wheel.

    An editable install run with ``PYTHONDONTWRITEBYTECODE=1`` (set on the machines these
    figures come from) would otherwise compile every dragoon module from source at every
    process start, and the whole-process rows (``run``, CLI start-up, the drone's start)
    would measure the compiler, not dragoon.
    """
    import compileall

    for package in ("cockpit", "relay", "drone", "shared", "dragoon"):
        if (REPO / package).is_dir():
            compileall.compile_dir(REPO / package, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--real-drones", action="store_true",
                        help="relay idle also with real drone processes (about 2 GiB of RAM)")
    args = parser.parse_args()
    counts = QUICK if args.quick else FULL
    compile_bytecode()
    results: dict[str, Any] = {"load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="dragoon-bench-table-") as tmp:
        work = Path(tmp)
        results.update(task_path(work, counts))
        print("running relay idle …", file=sys.stderr, flush=True)
        results.update(relay_idle(work, counts.idle_drones, counts.idle_seconds))
        if args.real_drones:
            print("running relay idle, real drones …", file=sys.stderr, flush=True)
            results.update(relay_idle_real(work, counts.idle_drones, counts.idle_seconds))
        print("running signed / unsigned …", file=sys.stderr, flush=True)
        results.update(signed_ratio(work, counts.signed_requests))
        print("running log append …", file=sys.stderr, flush=True)
        results.update(log_append(work, counts.append_megabytes))
    results["load_average_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print("| figure | dragoon | aim |")
    print("|---|---:|---|")
    for label, value, aim in rows(results, counts):
        print(f"| {label} | {value} | {aim} |")


if __name__ == "__main__":
    main()
