"""Signed and encrypted (issue 13) beside the code before it, on the same machine.

Run from a checkout::

    .venv/bin/python bench/bench_e2e.py [--megabytes 1024] [--runs 50] [--json FILE]

The same script runs on a checkout from before end-to-end encryption (it uses only the
pilot's ``RelayClient`` and the test fixtures both have) and on today's, so the two columns
of docs/benchmarks.md ("A relay that can be stolen") come from one sitting:

- **crypto, in-process** (today's checkout only): records sealed and opened (MB/s, 64 KiB
  and 256 KiB plaintext records, opened from 64 KiB reads as a follower gets them), task
  keys wrapped and unwrapped (sealed boxes per second), whole tasks opened per second
  (order signature, wrap, payload, spec rule);
- **tiny task**: ``echo hi`` through the pilot's own RelayClient, submit to output and exit
  status back, p50 / p99 (bench_table.py's ``tiny_latency``);
- **output end to end**: a task writes N MB to stdout as fast as it can; the pilot's client
  follows stdout to its end (decrypting, where the code does); wall time from the submit
  to the last byte in the pilot's hands, MB/s; the drone's peak RSS and CPU seconds per GB
  meanwhile, and the pilot's own CPU seconds per GB;
- **drone idle RSS** after the work (MiB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "bench"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import bench_table  # noqa: E402
from dragoon.cockpit.client import RelayClient  # noqa: E402

from tests.drone.conftest import Fleet  # noqa: E402
from tests.support.relay import PilotSession, RelayProcess  # noqa: E402

DRONE = bench_table.DRONE
SEALED = (REPO / "shared" / "e2e.py").exists()


def client_for(relay: RelayProcess, pilot: PilotSession) -> RelayClient:
    """The pilot's client; on today's code with the pilot's own env (its known_drones)."""
    if SEALED:
        return RelayClient(relay.url, signer=pilot.signer, token=pilot.token, env=pilot.env)
    return RelayClient(relay.url, signer=pilot.signer, token=pilot.token)


def crypto_rates(seconds: float = 1.0) -> dict[str, float]:
    from dragoon.shared import e2e, orders
    from dragoon.shared.sealed_task import Recipient, open_task, seal_task
    from dragoon.shared.signers import KeyFileSigner
    from dragoon.shared.spec import parse_spec
    from nacl.public import PrivateKey

    key = e2e.new_task_key()
    out: dict[str, float] = {}
    for size in (64 << 10, 256 << 10):
        data = os.urandom(size)
        writer = e2e.RecordWriter(key, task_id="t-bench", kind="out", name="stdout")
        records, sealed_bytes, start = [], 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            records.append(writer.seal(data))
            sealed_bytes += size
        out[f"seal_{size >> 10}k_mb_s"] = sealed_bytes / 1e6 / (time.perf_counter() - start)
        stored = b"".join(records)
        reader = e2e.RecordReader(key, task_id="t-bench", kind="out", name="stdout")
        start = time.perf_counter()
        for offset in range(0, len(stored), 64 << 10):
            reader.feed(stored[offset:offset + (64 << 10)])
        out[f"open_{size >> 10}k_mb_s"] = sealed_bytes / 1e6 / (time.perf_counter() - start)
    recipient = PrivateKey.generate()
    count, start = 0, time.perf_counter()
    wraps = []
    while time.perf_counter() - start < seconds:
        wraps.append(e2e.wrap_key(key, bytes(recipient.public_key)))
        count += 1
    out["wraps_per_s"] = count / (time.perf_counter() - start)
    start = time.perf_counter()
    for wrap in wraps:
        e2e.unwrap_key(wrap, bytes(recipient))
    out["unwraps_per_s"] = len(wraps) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        from tests.support.relay import new_signer

        signer: KeyFileSigner = new_signer(Path(tmp) / "id_ed25519")
        spec = parse_spec({"command": "python train.py --lr 3e-4", "env": {"TOKEN": "x" * 40}})
        order_id = orders.new_order_id()
        sealed = seal_task(spec, order_id=order_id,
                           recipients=[Recipient("SHA256:" + "A" * 43,
                                                 bytes(recipient.public_key))])
        order = orders.task_order(target=orders.drone_target("box"),
                                  spec_sha256=sealed.spec_sha256,
                                  payload_sha256=sealed.payload_sha256,
                                  recipients=["SHA256:" + "A" * 43], order_id=order_id)
        signed = orders.sign_order(signer, order)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            parsed, _key = orders.read_signed(signed.order.text, signed.signature)
            open_task(parsed, clear=sealed.clear, payload=sealed.payload,
                      wrap=sealed.wraps["SHA256:" + "A" * 43], x25519_secret=bytes(recipient))
            count += 1
        out["tasks_opened_per_s"] = count / (time.perf_counter() - start)
    return out


async def output_end_to_end(client: RelayClient, drone_pid: int, megabytes: int
                            ) -> dict[str, float]:
    size = megabytes * 1_000_000
    # Sampled here, not through bench_drone's helpers: this file also runs, copied, on a
    # checkout from before encryption, whose bench/ has no more than it had then.
    drone, me = psutil.Process(drone_pid), psutil.Process()
    peak = [drone.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], drone.memory_info().rss)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    drone_cpu, my_cpu = sum(drone.cpu_times()[:2]), sum(me.cpu_times()[:2])
    started = time.perf_counter()
    task = await client.submit(spec={"command": f"head -c {size} /dev/zero",
                                     "timeout": 3600}, drone=DRONE)
    got = 0
    async for chunk in client.follow_log(task_id=task["id"], stream="stdout"):
        got += len(chunk.data)
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    if got != size:
        raise RuntimeError(f"the pilot got {got} bytes of {size}")
    gigabytes = size / 1e9
    return {"output_mb": megabytes, "output_wall_s": wall, "output_mb_s": size / 1e6 / wall,
            "drone_peak_rss_mib": peak[0] / (1 << 20),
            "drone_cpu_s_per_gb": (sum(drone.cpu_times()[:2]) - drone_cpu) / gigabytes,
            "pilot_cpu_s_per_gb": (sum(me.cpu_times()[:2]) - my_cpu) / gigabytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"sealed": SEALED}
    if SEALED:
        print("crypto rates …", file=sys.stderr, flush=True)
        results.update(crypto_rates())
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        work = Path(tmp)
        with RelayProcess(work / "relay", config={"output_cap": 1 << 34}) as relay:
            pilot = relay.pilot("bench")
            fleet = Fleet(work, relay, pilot)
            drone = fleet.drone(DRONE, slots=bench_table.SLOTS, poll_wait=25.0)
            if SEALED:
                from tests.support.sealing import trust_drone

                trust_drone(pilot.env, drone.data_dir)
            bench_table.client_for = client_for  # the tiny-task figure through the same door
            try:
                assert drone.process is not None
                print("tiny task …", file=sys.stderr, flush=True)
                results.update(asyncio.run(bench_table.tiny_latency(relay, pilot, args.runs)))

                async def output() -> dict[str, float]:
                    async with client_for(relay, pilot) as client:
                        return await output_end_to_end(client, drone.process.pid,
                                                       args.megabytes)

                print("output end to end …", file=sys.stderr, flush=True)
                results.update(asyncio.run(output()))
                time.sleep(2)  # let the drone settle after the task's cleanup
                results["drone_idle_rss_mib"] = (psutil.Process(drone.process.pid)
                                                 .memory_info().rss / (1 << 20))
            finally:
                fleet.close()
                relay.kill9()
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
