"""A deterministic in-memory `DataSource` for the snapshot tests and the bench.

Not a mock of the relay's behaviour: it serves a fixed picture (drones,
tasks, messages, logs) so that the screens render the same bytes every run.
Behaviour is tested against a real relay and drone in test_live.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from dragoon.cockpit.app.live import Snapshot

NOW = 1_763_900_000.0


def fixed_clock() -> float:
    return NOW


def make_drone(i: int, **kw: Any) -> dict[str, Any]:
    gpus = [{"index": 0, "name": "A100", "util": (i * 37) % 100, "mem_used": 1, "mem_total": 2}]
    base: dict[str, Any] = {
        "name": f"gpu-{i:02d}", "state": "online", "draining": False,
        "labels": ["gpu", "a100"] if i % 2 == 0 else ["cpu"], "slots": 2 + i % 3,
        "running": i % 3, "fingerprint": "SHA256:x", "last_seen": NOW - 3, "enrolled_at": NOW,
        "hostname": f"box{i}", "version": "0.1.0",
        "metrics": {"cpu_percent": (i * 23) % 100, "mem_total": 64 << 30,
                    "mem_used": ((i * 11) % 100) * (64 << 30) // 100,
                    "gpus": gpus if i % 2 == 0 else []},
    }
    return base | kw


def make_task(i: int, state: str, drone: str | None, **kw: Any) -> dict[str, Any]:
    started = NOW - 600 - i * 60 if state not in ("queued", "dispatched") else None
    final = state in ("succeeded", "failed", "timed_out", "cancelled", "lost")
    base: dict[str, Any] = {
        "id": f"t-{i:010d}", "name": None, "state": state, "drone": drone,
        "target": {"drone": drone} if drone else {"labels": ["gpu"]},
        "spec": {"command": f"python train.py --lr 3e-{i % 5} --seed {i}", "env": {},
                 "cwd": None, "timeout": 10800, "grace": 10, "artifacts": ["out/*.pt"],
                 "name": None},
        "pilot": "alice", "created_at": NOW - 700 - i * 60, "dispatched_at": started,
        "started_at": started, "finished_at": (started or NOW) + 300 if final else None,
        "expires_at": NOW + 86400, "lost_after": 86400,
        "exit_code": (0 if state == "succeeded" else 1) if state in ("succeeded", "failed")
        else None,
        "signal": None, "cpu_seconds": 12.5 if final else None,
        "peak_rss": 1 << 30 if final else None, "cancel_requested": False, "error": None,
        "stdout_size": 1234, "stderr_size": 56, "output_truncated": False,
    }
    return base | kw


def demo_snapshot(drones: int = 6) -> Snapshot:
    ds = [make_drone(i) for i in range(drones)]
    if drones > 3:
        ds[3] = make_drone(3, state="offline", last_seen=NOW - 420, running=0, metrics=None)
        ds[1] = make_drone(1, draining=True)
    states = ["running", "running", "succeeded", "failed", "running", "cancelled", "succeeded",
              "timed_out"]
    tasks = [make_task(i, states[i % len(states)], f"gpu-{i % 3:02d}") for i in range(12)]
    tasks[2]["name"] = "lr sweep"
    tasks.append(make_task(40, "queued", None))
    messages = [
        {"id": 1, "task": tasks[0]["id"], "drone": "gpu-00", "text": "epoch 3 done, loss 0.412",
         "created_at": NOW - 120, "acked": False},
        {"id": 2, "task": tasks[1]["id"], "drone": "gpu-01", "text": "checkpoint saved",
         "created_at": NOW - 60, "acked": False},
    ]
    return Snapshot(drones=ds, tasks=tasks, messages=messages)


def make_job(job_id: str = "j-0000000001", trials: int = 4, **kw: Any) -> dict[str, Any]:
    """A JOBVIEW (docs/api.md), counts all queued."""
    base: dict[str, Any] = {
        "id": job_id, "name": "lr sweep", "kind": "sweep", "pilot": "alice", "state": "running",
        "created_at": NOW - 900, "finished_at": None, "trials": trials, "max_parallel": None,
        "retries": 0, "retry_on": [], "stop_on_failure": False, "cancel_requested": False,
        "stopped": None, "counts": {"queued": trials, "running": 0, "succeeded": 0,
                                    "failed": 0, "cancelled": 0},
    }
    return base | kw


def make_trial(job_id: str, trial: int, state: str, params: dict[str, str],
               drone: str | None = "gpu-00", attempt: int = 0, **kw: Any) -> dict[str, Any]:
    """One trial's task, its spec opened, the point in DRAGOON_PARAMS as the client seals it."""
    task = make_task(1000 + trial * 10 + attempt, state, drone if state != "queued" else None,
                     job=job_id, trial=trial, attempt=attempt, **kw)
    task["spec"]["env"] = {"DRAGOON_JOB": job_id, "DRAGOON_TRIAL": str(trial),
                           "DRAGOON_PARAMS": json.dumps(params, sort_keys=True)}
    return task


def demo_log(lines: int = 60) -> dict[str, bytes]:
    out = b"".join(b"epoch %d step %04d loss=%.4f lr=3e-4\n" % (i // 20, i, 1 / (i + 1))
                   for i in range(lines))
    err = b"warning: gradient overflow at step 0042, rescaling\n"
    return {"stdout": out, "stderr": err}


class FixedSource:
    """Serves one snapshot, no events, the same log for every task."""

    relay_url = "https://relay.example:8443"
    pilot = "alice"

    def __init__(self, snapshot: Snapshot | None = None,
                 logs: dict[str, bytes] | None = None) -> None:
        self.fixed = snapshot or demo_snapshot()
        self.logs = logs if logs is not None else demo_log()
        self.acked: list[int] = []
        self.saved: list[tuple[Path, bool]] = []
        self.job_reads: list[str] = []
        self.events_queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def snapshot(self) -> Snapshot:
        return self.fixed

    async def events(self, on_retry: Callable[[BaseException], None]) -> AsyncIterator[
            tuple[str, dict[str, Any]]]:
        while True:
            yield await self.events_queue.get()

    async def ping(self) -> float:
        return 0.012

    async def follow_log(self, task_id: str, stream: str, offset: int) -> AsyncIterator[bytes]:
        data = self.logs.get(stream, b"")
        for start in range(offset, len(data), 1 << 20):  # the relay's 1 MiB reads
            yield data[start:start + (1 << 20)]
            await asyncio.sleep(0)

    async def submit(self, spec: dict[str, Any], *, drone: str | None,
                     labels: list[str] | None) -> dict[str, Any]:
        raise NotImplementedError("the fixed source takes no orders")

    async def cancel(self, task_id: str) -> dict[str, Any]:
        raise NotImplementedError("the fixed source takes no orders")

    async def job_tasks(self, job_id: str) -> list[dict[str, Any]]:
        self.job_reads.append(job_id)
        return [t for t in self.fixed.tasks if t.get("job") == job_id]

    async def ack(self, ids: list[int]) -> int:
        self.acked += ids
        return len(ids)

    async def drain(self, drone: str, drain: bool) -> dict[str, Any]:
        raise NotImplementedError("the fixed source takes no orders")

    async def enroll(self, drone: str, labels: list[str], *, replace: bool = False) -> str:
        raise NotImplementedError("the fixed source takes no orders")

    async def artifacts(self, task_id: str) -> list[dict[str, Any]]:
        return [{"path": "out/model.pt", "size": 123456789, "sha256": "ab" * 32,
                 "uploaded_at": NOW - 30}]

    async def download_artifact(self, task_id: str, artifact: dict[str, Any],
                                dest: Path, *, force: bool = False) -> Path:
        """Writes the artifact's path as its content; refuses to replace a file unless forced,
        as `RelayClient` does."""
        if dest.exists() and not force:
            raise FileExistsError(dest)
        dest.write_text(str(artifact["path"]))
        self.saved.append((dest, force))
        return dest

    async def fetch(self, drone: str, path: str, dest: Path, *, force: bool = False) -> Path:
        raise NotImplementedError

    async def login(self, totp: str) -> None:
        return None

    async def aclose(self) -> None:
        return None
