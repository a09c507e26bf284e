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

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from dragoon.cockpit.client import RelayClient, RelayError

from tests.drone.conftest import Fleet
from tests.support.relay import PilotSession
from tests.support.replicas import ReplicaSet
from tests.support.sealing import trust_drone

T = TypeVar("T")
LINES = 150


def through_failures(action: Callable[[], T], *, timeout: float = 30.0) -> T:
    """What a reader does across a failover: a read cut by the kill is made again. Never
    around a submit: a submit sent again must carry the same signed order (``Pilot``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except (httpx.TransportError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Pilot:
    """The pilot's own ``RelayClient`` on an event loop of its own: a submit whose answer a
    kill cut is sent again by the client itself, under the same signed order."""

    def __init__(self, url: str, session: PilotSession) -> None:
        self.session = session
        self.loop = asyncio.new_event_loop()
        self.client = RelayClient(url, signer=session.signer, token=session.token,
                                  env=session.env)
        self.resent: list[str] = []
        self.client.on_resend = lambda error, _delay: self.resent.append(error.code)

    def submit(self, command: str, **target: Any) -> str:
        self.loop.run_until_complete(self._recipients(**target))
        task = self.loop.run_until_complete(
            self.client.submit(spec={"command": command, "grace": 1}, **target))
        key = self.client.keys.task_key(task["id"])
        assert key is not None
        self.session.task_keys[task["order_id"]] = key  # for the session's reads
        return str(task["id"])

    async def _recipients(self, drone: str | None = None,
                          labels: list[str] | None = None) -> None:
        """Whom the submit is sealed to, read first (a read is made again through a cut):
        the submit that follows finds them in the client's cache."""
        deadline = time.monotonic() + 30
        while True:
            try:
                await self.client._recipients_for(drone, labels)
                return
            except RelayError as error:
                if not error.retryable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


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
    replicas, fleet, session = world
    pilot = Pilot(replicas.url, session)
    runs = tmp_path / "runs"
    # To the label, so the short ones below reuse the recipients this submit checked.
    streaming = pilot.submit(f'echo "$DRAGOON_TASK_ID" >> {runs}; '
                             f'for i in $(seq 1 {LINES}); do echo "line $i"; sleep 0.02; done',
                             labels=["fo"])
    through_failures(lambda: fleet.wait_state(streaming, "running", timeout=30))
    time.sleep(0.5)  # some of the output is through, most of it is to come
    victim = replicas.replicas[1]
    victim.kill9()
    killed_at = time.monotonic()
    # Tasks submitted while the balancer may still send a request to the dead replica.
    short = [pilot.submit(f'echo "$DRAGOON_TASK_ID" >> {runs}; echo short {i}', labels=["fo"])
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
        tiny = pilot.submit("true", drone=fleet.name(name))
        assert through_failures(lambda t=tiny: fleet.wait_state(t, timeout=30))["state"] == \
            "succeeded"
    assert replicas.up() == 2
    pilot.close()
    print(f"\nfailover: every task done {served_again:.2f} s after the kill; "
          f"{len(pilot.resent)} submit(s) sent again after a lost answer")


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
    back = Pilot(replicas.url, pilot)
    try:
        task = back.submit("echo back", drone=fleet.name("d2"))
    finally:
        back.close()
    assert through_failures(lambda: fleet.wait_state(task, timeout=30))["state"] == "succeeded"
    print(f"\nfailover: balancer routed around the dead replica in {out_after:.2f} s")
