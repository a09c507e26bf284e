"""The relay link's transports side by side (issue 12): httpx's default against
shared/h11transport.py, on a real relay, in one sitting.

    .venv/bin/python bench/bench_transport.py [--rounds 500]        # round trips
    .venv/bin/python bench/bench_transport.py --tasks 4             # tiny task + `dragoon run`

Round trips: GET /healthz on a bare ``httpx.AsyncClient``, and a signed request
(``RelayClient.drones()``: signature, session token, a database read), p50/p90 in
ms, interleaved blocks so that load from other processes falls on both alike.

``--tasks N``: N sittings per transport, alternated; each starts a relay and a
real drone with ``DRAGOON_HTTP_TRANSPORT`` set (``httpx``) or not, then measures
bench_table.py's tiny-task latency (p50/p99 of 200) and its whole-process
``dragoon run d -- 'echo hi'`` (median of 10). Prints every sitting and the
medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "bench"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import httpx  # noqa: E402
from bench_table import (  # noqa: E402
    DRONE,
    SLOTS,
    TINY,
    compile_bytecode,
    logged_in_cli,
    timed,
    tiny_latency,
)
from dragoon.cockpit.client import RelayClient  # noqa: E402
from dragoon.shared.h11transport import FALLBACK_VARIABLE, H11Transport  # noqa: E402
from dragoon.shared.tls import plain_http_context  # noqa: E402

from tests.drone.conftest import Fleet  # noqa: E402
from tests.support.relay import PilotSession, RelayProcess  # noqa: E402

TRANSPORTS = ("httpx", "h11")


async def sample(fn: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def quantile(times: list[float], fraction: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def transport(name: str) -> httpx.AsyncBaseTransport:
    if name == "h11":
        return H11Transport(plain_http_context())
    return httpx.AsyncHTTPTransport(verify=plain_http_context())


async def round_trips(relay: RelayProcess, pilot: PilotSession, rounds: int) -> None:
    bare = {name: httpx.AsyncClient(transport=transport(name)) for name in TRANSPORTS}
    signed = {name: RelayClient(relay.url, signer=pilot.signer, token=pilot.token,
                                transport=transport(name), env=pilot.env)
              for name in TRANSPORTS}
    results: dict[tuple[str, str], list[float]] = {}
    for name in TRANSPORTS:  # warm: connection made, first imports done
        await bare[name].get(relay.url + "/healthz")
        await signed[name].drones()
    for _ in range(10):
        for name in TRANSPORTS:
            async def healthz(client: httpx.AsyncClient = bare[name]) -> None:
                (await client.get(relay.url + "/healthz")).raise_for_status()

            results.setdefault(("GET /healthz", name), []).extend(
                await sample(healthz, rounds // 10))
            results.setdefault(("signed drones()", name), []).extend(
                await sample(signed[name].drones, rounds // 10))
    for (label, name), times in sorted(results.items()):
        print(f"{label:16s} {name:6s} p50 {quantile(times, 0.5):.3f} ms  "
              f"p90 {quantile(times, 0.9):.3f} ms  (n={len(times)})")
    for client in bare.values():
        await client.aclose()
    for relay_client in signed.values():
        await relay_client.aclose()


def run_whole(root: Path, relay: RelayProcess, runs: int, env_extra: dict[str, str]) -> float:
    """bench_table.cli_whole_process's ``run`` figure, with this sitting's transport variable."""
    dragoon, env = logged_in_cli(root, relay, env_extra)
    argv = [*dragoon, "run", DRONE, "--", TINY]
    timed(argv, env, expect=0)
    return statistics.median(timed(argv, env, expect=0) for _ in range(runs)) * 1000


def sitting(name: str, latency_runs: int, cli_runs: int) -> dict[str, Any]:
    env_extra = {FALLBACK_VARIABLE: "httpx"} if name == "httpx" else {}
    saved = os.environ.get(FALLBACK_VARIABLE)
    os.environ.pop(FALLBACK_VARIABLE, None)
    os.environ.update(env_extra)  # the drone's process and the in-process pilot read it
    try:
        with tempfile.TemporaryDirectory(prefix="dragoon-bench-transport-") as tmp:
            work = Path(tmp)
            with RelayProcess(work / "relay", config={"output_cap": 1 << 30}) as relay:
                pilot = relay.pilot("bench")
                fleet = Fleet(work, relay, pilot)
                fleet.drone(DRONE, slots=SLOTS, poll_wait=25.0)
                try:
                    figures = asyncio.run(tiny_latency(relay, pilot, latency_runs))
                    figures["run_whole_ms"] = run_whole(work, relay, cli_runs, env_extra)
                finally:
                    fleet.close()
                    relay.kill9()
    finally:
        os.environ.pop(FALLBACK_VARIABLE, None)
        if saved is not None:
            os.environ[FALLBACK_VARIABLE] = saved
    return figures


def tasks(sittings: int, latency_runs: int, cli_runs: int) -> None:
    compile_bytecode()
    seen: dict[str, list[dict[str, Any]]] = {name: [] for name in TRANSPORTS}
    for index in range(sittings):
        for name in TRANSPORTS if index % 2 == 0 else TRANSPORTS[::-1]:
            figures = sitting(name, latency_runs, cli_runs)
            seen[name].append(figures)
            print(f"{name:6s} tiny p50 {figures['tiny_p50_ms']:.1f} ms  p99 "
                  f"{figures['tiny_p99_ms']:.1f} ms  run {figures['run_whole_ms']:.0f} ms",
                  flush=True)
    for name in TRANSPORTS:
        medians = {key: statistics.median(f[key] for f in seen[name])
                   for key in ("tiny_p50_ms", "tiny_p99_ms", "run_whole_ms")}
        print(f"median of {sittings}, {name:6s}: tiny p50 {medians['tiny_p50_ms']:.1f} ms  "
              f"p99 {medians['tiny_p99_ms']:.1f} ms  run {medians['run_whole_ms']:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=500, help="round trips per figure")
    parser.add_argument("--tasks", type=int, metavar="N",
                        help="instead: N sittings per transport of the tiny-task figures")
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--cli-runs", type=int, default=10)
    args = parser.parse_args()
    if args.tasks:
        tasks(args.tasks, args.latency_runs, args.cli_runs)
        return
    with tempfile.TemporaryDirectory() as tmp, RelayProcess(Path(tmp) / "relay") as relay:
        pilot = relay.pilot("bench")
        asyncio.run(round_trips(relay, pilot, args.rounds))
        relay.kill9()


if __name__ == "__main__":
    main()
