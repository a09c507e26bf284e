"""``kill -9`` of the relay at any moment: it restarts with nothing corrupt and no
acknowledged byte or transition lost. What the relay holds of a log after the restart is
read from where its backend keeps it (tests/support/stored.py: the log file, or the
PostgreSQL rows)."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.relay import (
    DroneClient,
    PilotSession,
    RelayProcess,
    SignedClient,
    configured_database,
    relay_db,
    wait_until,
)
from tests.support.stored import log_bytes


@pytest.fixture
def crashing(tmp_path: Path):  # type: ignore[no-untyped-def]
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.2}) as relay:
        yield relay


def _retrying(call: Any, *, within: float = 60.0) -> httpx.Response:
    """Retry across the relay's restart: connection refused while it is down, or a 5xx
    (a balancer in front answers 503 at once until a replica is routed again), waiting a
    little between tries, until ``within`` seconds have passed."""
    end = time.monotonic() + within
    last: object = None
    while time.monotonic() < end:
        try:
            answer: httpx.Response = call()
        except httpx.TransportError as exc:
            last = exc
        else:
            if answer.status_code < 500:
                return answer
            last = f"{answer.status_code} {answer.text[:200]}"
        threading.Event().wait(0.02)
    raise AssertionError(f"relay never came back within {within} s: {last}")


def _integrity(data_dir: Path) -> str:
    """SQLite's integrity check; on PostgreSQL (whose server survived: only the relay was
    killed) every relay table reads whole, its indexes agreeing with a full scan."""
    if not configured_database(data_dir):
        with sqlite3.connect(data_dir / "relay.db") as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    with relay_db(data_dir) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        for table in tables:
            conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()  # noqa: S608
        counted = conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
        indexed = conn.execute("SELECT COUNT(*) FROM (SELECT id FROM tasks ORDER BY id) t"
                               ).fetchone()[0]
        return "ok" if tables and counted == indexed else "tasks index disagrees"


def test_kill9_during_log_appends_loses_no_acknowledged_byte(crashing: RelayProcess) -> None:
    pilot = crashing.pilot()
    drone = crashing.drone("writer", pilot=pilot)
    task = pilot.submit("yes", drone="writer")["id"]
    drone.poll()
    payload = b"".join(b"line %06d\n" % i for i in range(3000))  # 36 kB
    acked = {"offset": 0, "at_kill": -1}

    def ship() -> None:
        offset = 0
        while offset < len(payload):
            chunk = payload[offset:offset + 512]
            answer = _retrying(lambda: drone.log(task, "stdout", offset, chunk))  # noqa: B023
            if answer.status_code == 409:
                offset = answer.json()["expected"]
                continue
            assert answer.status_code == 200, answer.text
            offset = answer.json()["next_offset"]
            acked["offset"] = offset

    thread = threading.Thread(target=ship)
    thread.start()
    wait_until(lambda: acked["offset"] > len(payload) // 3, timeout=30, message="appends")
    crashing.kill9()
    acked["at_kill"] = acked["offset"]
    crashing.start()
    stored = log_bytes(crashing.data_dir, task, "stdout")
    assert len(stored) >= acked["at_kill"]
    assert stored == payload[:len(stored)]
    thread.join(60)
    # The session survived too: the pilot reads with the token from before the crash.
    assert pilot.get(f"/v1/tasks/{task}/log", params={"limit": 1 << 20}).content == payload
    assert _integrity(crashing.data_dir) == "ok"


def test_kill9_during_many_concurrent_appends_loses_no_acknowledged_byte(
    crashing: RelayProcess,
) -> None:
    """Group commit under fire: 4 tasks x 2 streams, each with 4 chunks in flight as a drone
    ships them, so appends to one file and to many share sync rounds when the relay dies."""
    pilot = crashing.pilot()
    drone = crashing.drone("writer", pilot=pilot, slots=4)
    tasks = [pilot.submit("yes", drone="writer")["id"] for _ in range(4)]
    handed: list[str] = []
    wait_until(lambda: handed.extend(t["id"] for t in drone.poll(running=handed).json()["tasks"])
               or len(handed) == len(tasks), timeout=30, message="all four tasks handed")
    chunk, window = 2048, 4
    payloads = {
        (task, stream): b"".join(b"%s %s %05d\n" % (task.encode(), stream.encode(), i)
                                 for i in range(8000))[:chunk * 100]
        for task in tasks for stream in ("stdout", "stderr")
    }
    acked = dict.fromkeys(payloads, 0)
    failures: list[BaseException] = []

    def ship(task: str, stream: str) -> None:
        payload = payloads[(task, stream)]
        client = SignedClient(crashing.url, drone.signer)
        offset = 0

        def post(at: int) -> int:
            part = payload[at:at + chunk]
            answer = _retrying(lambda: client.post("/v1/worker/log", params={
                "task": task, "stream": stream, "offset": at}, content=part))
            if answer.status_code == 409:
                assert answer.json()["error"] == "offset_gap", answer.text
                return int(answer.json()["expected"])
            assert answer.status_code == 200, answer.text
            acked[(task, stream)] = max(acked[(task, stream)], answer.json()["next_offset"])
            return int(answer.json()["next_offset"])

        try:
            with ThreadPoolExecutor(window) as pool:
                while offset < len(payload):
                    starts = range(offset, min(len(payload), offset + window * chunk), chunk)
                    answers = list(pool.map(post, starts))
                    moved = [a for a, at in zip(answers, starts, strict=True) if a > at]
                    offset = max(moved) if moved else max(answers)
        except BaseException as exc:
            failures.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=ship, args=key) for key in payloads]
    for thread in threads:
        thread.start()
    total = sum(len(p) for p in payloads.values())
    wait_until(lambda: sum(acked.values()) > total // 3, timeout=60, message="appends")
    crashing.kill9()
    at_kill = dict(acked)
    crashing.start()
    for (task, stream), payload in payloads.items():
        stored = log_bytes(crashing.data_dir, task, stream)
        assert len(stored) >= at_kill[(task, stream)], (task, stream)
        assert stored == payload[:len(stored)], (task, stream)
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    for (task, stream), payload in payloads.items():  # exactly once: no byte lost or doubled
        got = pilot.get(f"/v1/tasks/{task}/log", params={"stream": stream, "limit": 1 << 20})
        assert got.content == payload, (task, stream)
    assert _integrity(crashing.data_dir) == "ok"


def test_kill9_during_task_transitions_keeps_state_intact(crashing: RelayProcess) -> None:
    pilot: PilotSession = crashing.pilot()
    drone: DroneClient = crashing.drone("worker", pilot=pilot, slots=4)
    ids = [pilot.submit(f"echo {i}", drone="worker")["id"] for i in range(24)]
    finished: list[str] = []
    stop = threading.Event()

    def work() -> None:
        held: list[str] = []
        while not stop.is_set() and len(finished) < len(ids):
            report: dict[str, Any] = {"running": list(held),
                                      "started": [{"id": t} for t in held]}
            answer = _retrying(lambda: drone.poll(**report))  # noqa: B023
            held += [t["id"] for t in answer.json()["tasks"] if t["id"] not in held]
            for task_id in list(held):
                result = _retrying(lambda: drone.finish(task_id))  # noqa: B023
                assert result.status_code == 200, result.text
                held.remove(task_id)
                finished.append(task_id)

    thread = threading.Thread(target=work)
    thread.start()
    wait_until(lambda: len(finished) >= 6, timeout=30, message="some finished")
    crashing.kill9()
    done_before_kill = list(finished)
    crashing.start()
    thread.join(60)
    stop.set()
    assert _integrity(crashing.data_dir) == "ok"
    with relay_db(crashing.data_dir) as conn:
        states = {r[0]: r[1] for r in conn.execute("SELECT id, state FROM tasks")}
    assert all(states[t] == "succeeded" for t in done_before_kill)
    assert sorted(finished) == sorted(ids)
    assert all(states[t] == "succeeded" for t in ids)
