"""The cockpit's `LiveSource` over a real relay that restarts: it resumes the event stream by id,
and what it holds at the end is what a fresh snapshot says; a `reset` makes it re-list.

The state is `CockpitState`, fed as the app feeds it (snapshot, then events), without
the Textual app: what is pinned is the data path. The app's handling of the
re-listing is pinned over the fixed source at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.live import LiveSource, Snapshot
from dragoon.cockpit.app.state import CockpitState
from dragoon.cockpit.client import RelayClient

from tests.cockpit.fixed_source import FixedSource, demo_snapshot, fixed_clock
from tests.cockpit.waiting import until
from tests.support.relay import DroneClient, PilotSession, RelayProcess

pytestmark = pytest.mark.anyio
NOWHERE = ["no-such-drone"]


class Follower:
    """A `LiveSource` and the state it keeps, as the cockpit's sync worker keeps it."""

    def __init__(self, relay: RelayProcess, pilot: PilotSession) -> None:
        client = RelayClient(relay.url, signer=pilot.signer, token=pilot.token,
                             env=pilot.env, timeout=10.0)
        self.source = LiveSource(client, pilot="alice")
        self.state = CockpitState()
        self.snapshots = 0
        self.retries = 0
        self._task: asyncio.Task[None] | None = None

    def apply(self, snapshot: Snapshot) -> None:
        self.state.apply_snapshot(drones=snapshot.drones, tasks=snapshot.tasks,
                                  messages=snapshot.messages)
        self.snapshots += 1

    async def start(self, *, snapshot: bool = True) -> None:
        if snapshot:
            self.apply(await self.source.snapshot())
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        def retried(_error: BaseException) -> None:
            self.retries += 1

        async for kind, data in self.source.events(retried):
            if kind == "snapshot":
                self.apply(Snapshot(**data))
            else:
                self.state.apply_event(kind, data)

    async def pause(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def until(self, condition: Callable[[CockpitState], object], what: str,
                    timeout: float = 30) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition(self.state):
            assert self._task is not None and not self._task.done(), "the follower ended"
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.pause()
        await self.source.aclose()


async def fresh_state(relay: RelayProcess, pilot: PilotSession) -> CockpitState:
    client = RelayClient(relay.url, signer=pilot.signer, token=pilot.token,
                         env=pilot.env, timeout=10.0)
    async with client:
        snapshot = await LiveSource(client).snapshot()
    state = CockpitState()
    state.apply_snapshot(drones=snapshot.drones, tasks=snapshot.tasks, messages=snapshot.messages)
    return state


def same_as(held: CockpitState, fresh: CockpitState) -> None:
    assert held.drones == fresh.drones
    assert held.tasks == fresh.tasks
    assert held.unread_messages() == fresh.unread_messages()


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The test's own blocking clients, off the loop the follower reads on."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def changes(pilot: PilotSession, drone: DroneClient, tag: str) -> str:
    """One of each: a task dispatched, run and finished, a message, a queued task; the id of
    a marker task submitted last."""
    ran = (await call(pilot.submit, f"echo {tag}", drone=drone.name))["id"]
    assert (await call(drone.poll, metrics={"cpu_percent": 5.0})).status_code == 200
    assert (await call(drone.message, ran, 0, f"note {tag}")).status_code == 200
    assert (await call(drone.finish, ran)).status_code == 200
    await call(pilot.submit, f"echo {tag} queued", labels=NOWHERE)
    assert (await call(drone.poll, metrics={"cpu_percent": 7.5})).status_code == 200
    return str((await call(pilot.submit, f"echo {tag} marker", labels=NOWHERE))["id"])


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
async def test_a_live_source_resumes_across_a_relay_restart_and_ends_as_a_fresh_snapshot(
    tmp_path: Path, stop: str
) -> None:
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.2}) as relay:
        pilot = relay.pilot()
        drone = relay.drone("box", slots=4, pilot=pilot)
        follower = Follower(relay, pilot)
        await follower.start()
        try:
            marker = await changes(pilot, drone, "before")
            await follower.until(lambda s: marker in s.tasks, "the changes before the restart")
            halt = relay.kill9 if stop == "kill9" else relay.stop
            # The stream breaks, backs off while the relay is away, and reconnects by itself.
            await call(halt)
            await follower.until(lambda _: follower.retries > 0, "the stream noticing")
            await call(relay.start)
            marker = await changes(pilot, drone, "after")
            await follower.until(lambda s: marker in s.tasks, "the changes after the restart")
            # Away over a restart and the changes after it: all of them come from the replay.
            await follower.pause()
            await call(halt)
            await call(relay.start)
            marker = await changes(pilot, drone, "away")
            await follower.start(snapshot=False)
            await follower.until(lambda s: marker in s.tasks, "the changes made while away")
            same_as(follower.state, await fresh_state(relay, pilot))
            assert follower.snapshots == 1, "resumed by id: no reset, no second listing"
            assert len(follower.state.unread_messages()) == 3
        finally:
            await follower.close()


def _oldest_kept(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "relay.db", timeout=30) as conn:
        return int(conn.execute("SELECT COALESCE(MIN(id), 0) FROM events").fetchone()[0])


async def test_a_live_source_too_far_behind_is_reset_and_lists_again(tmp_path: Path) -> None:
    config = {"sweep_interval": 0.1, "events_kept": 2}
    with RelayProcess(tmp_path / "relay", config=config) as relay:
        pilot = relay.pilot()
        drone = relay.drone("box", slots=4, pilot=pilot)
        follower = Follower(relay, pilot)
        await follower.start()
        try:
            marker = await changes(pilot, drone, "seen")
            await follower.until(lambda s: marker in s.tasks, "the first changes")
            await follower.pause()  # away: a laptop asleep
            position = follower.source.position
            assert position is not None
            await call(relay.stop)
            await call(relay.start)
            marker = await changes(pilot, drone, "missed")
            seen = int(position.rsplit("-", 1)[1])
            await until_async(lambda: _oldest_kept(relay.data_dir) > seen + 1,
                              "the events it missed pruned")
            await follower.start(snapshot=False)  # resumes from its position: too old
            await follower.until(lambda s: marker in s.tasks, "the re-listing")
            assert follower.snapshots == 2
            same_as(follower.state, await fresh_state(relay, pilot))
            # Then events flow again, from the position of the new listing.
            after = (await call(pilot.submit, "echo later", labels=NOWHERE))["id"]
            await follower.until(lambda s: after in s.tasks, "events after the reset")
            assert follower.snapshots == 2
        finally:
            await follower.close()


async def until_async(condition: Callable[[], object], what: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(condition):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_the_app_applies_a_listing_that_comes_down_the_event_stream() -> None:
    source = FixedSource()
    app = CockpitApp(source, clock=fixed_clock, ping_interval=3600)  # type: ignore[arg-type]
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.snapshots == 1, what="the first snapshot")
        assert "gpu-05" in app.state.drones
        listing = demo_snapshot(drones=4)  # two drones fewer: removed by the re-listing
        await source.events_queue.put(("snapshot", {
            "drones": listing.drones, "tasks": listing.tasks, "messages": listing.messages}))
        await until(pilot, lambda: app.snapshots == 2, what="the re-listing")
        assert sorted(app.state.drones) == sorted(d["name"] for d in listing.drones)
