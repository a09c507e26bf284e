"""Failover: three replicas behind a real HAProxy, one killed with SIGKILL mid-stream (issue 15).

Two real drone processes and a pilot reach the relay only through the balancer, which
sends each request to the next replica in turn. While a task streams its output and
others queue, one replica is killed with SIGKILL. The balancer's health check
(``GET /healthz``) takes it out; the drones' and the pilot's next requests go to the
others. Nothing is lost: every line of the streamed output is there once and in order,
every task ends ``succeeded`` and ran exactly once, and both drones are served again
within a few seconds (the time is printed: docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tests.drone.conftest import Fleet
from tests.support.relay import PilotSession
from tests.support.replicas import ReplicaSet
from tests.support.sealing import trust_drone

T = TypeVar("T")
LINES = 150


def through_failures(action: Callable[[], T], *, timeout: float = 30.0) -> T:
    """What any client does across a failover: a request cut by the kill is sent again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except (httpx.TransportError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[ReplicaSet, Fleet, PilotSession]]:
    with ReplicaSet(tmp_path / "relays", count=3,
                    config={"sweep_interval": 0.2, "offline_after": 30}) as replicas:
        pilot = replicas.pilot("alice")
        fleet = Fleet(tmp_path, replicas.replicas[0], pilot)  # enrolls with the balancer's URL
        try:
            for name in ("d1", "d2"):
                drone = fleet.drone(name, labels=("fo",), slots=4, poll_wait=10.0)
                trust_drone(pilot.env, drone.data_dir)
            yield replicas, fleet, pilot
        finally:
            fleet.close()


def test_a_replica_killed_mid_stream_loses_no_output_and_runs_no_task_twice(
    world: tuple[ReplicaSet, Fleet, PilotSession], tmp_path: Path,
) -> None:
    replicas, fleet, _pilot = world
    runs = tmp_path / "runs"
    streaming = through_failures(lambda: fleet.submit(f'echo "$DRAGOON_TASK_ID" >> {runs}; '
                             f'for i in $(seq 1 {LINES}); do echo "line $i"; sleep 0.02; done',
                             drone="d1"))
    through_failures(lambda: fleet.wait_state(streaming, "running", timeout=30))
    time.sleep(0.5)  # some of the output is through, most of it is to come
    victim = replicas.replicas[1]
    victim.kill9()
    killed_at = time.monotonic()
    # Tasks submitted while the balancer may still send a request to the dead replica.
    short = [through_failures(lambda i=i: fleet.submit(
        f'echo "$DRAGOON_TASK_ID" >> {runs}; echo short {i}', labels=["fo"]))
        for i in range(6)]

    for task_id in [streaming, *short]:
        task = through_failures(lambda t=task_id: fleet.wait_state(t, timeout=60))
        assert task["state"] == "succeeded", task
    served_again = time.monotonic() - killed_at

    expected = "".join(f"line {i}\n" for i in range(1, LINES + 1)).encode()
    assert through_failures(lambda: fleet.output(streaming, whole=True)) == expected
    assert through_failures(lambda: fleet.output(short[3], whole=True)) == b"short 3\n"
    ran = Counter(runs.read_text().split())
    assert ran == Counter([streaming, *short]), f"tasks did not run exactly once: {ran}"
    # Both drones are served by the two that are left: a task on each comes back.
    for name in ("d1", "d2"):
        tiny = through_failures(lambda n=name: fleet.submit("true", drone=n))
        assert through_failures(lambda t=tiny: fleet.wait_state(t, timeout=30))["state"] == \
            "succeeded"
    assert replicas.up() == 2
    print(f"\nfailover: every task done {served_again:.2f} s after the kill")


def test_the_balancer_takes_a_killed_replica_out_and_a_restarted_one_back(
    world: tuple[ReplicaSet, Fleet, PilotSession],
) -> None:
    replicas, fleet, pilot = world
    victim = replicas.replicas[2]
    victim.kill9()
    killed_at = time.monotonic()

    def six_in_a_row() -> None:  # one round of the balancer over every server, twice
        for _ in range(6):
            assert pilot.get("/v1/tasks").status_code == 200

    through_failures(six_in_a_row)  # within the health checks' fall time
    out_after = time.monotonic() - killed_at
    assert out_after < 10, out_after
    victim.start()
    replicas.wait_served(count=3)
    task = through_failures(lambda: fleet.submit("echo back", drone="d2"))
    assert through_failures(lambda: fleet.wait_state(task, timeout=30))["state"] == "succeeded"
    print(f"\nfailover: balancer routed around the dead replica in {out_after:.2f} s")
