"""The drone's shippers against a real relay, after the task's finish was recorded.

A drone that restarts after the relay acknowledged its finish, but before it
removed the task's spool, ships again from a stale hint: those resends must be
acknowledged, and anything new must end the shipping (``TaskFinished``), not
be retried forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from dragoon.drone.client import RelayLink
from dragoon.drone.inbox import InboxShipper
from dragoon.drone.sealer import SealedSpool
from dragoon.drone.shipper import StreamShipper, TaskFinished

from tests.support.relay import DroneClient, PilotSession, RelayProcess

T = TypeVar("T")
HANG_GUARD = 30.0  # a deadline against a loop, not a timing the test measures


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path / "relay") as process:
        yield process


KEY = bytes(range(32))  # the drone's side only: no pilot opens these records here


def sealer(folder: Path, task: str, plaintext: bytes) -> SealedSpool:
    """A stdout spool holding ``plaintext`` (the wrapper's), and its sealer beside it."""
    folder.mkdir(exist_ok=True)
    (folder / "stdout").write_bytes(plaintext)
    return SealedSpool(task_key=KEY, task_id=task, stream="stdout", plain=folder / "stdout")


@pytest.fixture
def finished(relay: RelayProcess, tmp_path: Path) -> tuple[DroneClient, str, bytes]:
    """A task whose drone shipped ``hello\\n`` (sealed, final) and one message, then finished."""
    pilot: PilotSession = relay.pilot()
    drone = relay.drone("box", pilot=pilot)
    task = pilot.submit("run", drone=drone.name)["id"]
    drone.poll()
    drone.poll(running=[task], started=[{"id": task}])
    spool = sealer(tmp_path / "task", task, b"hello\n")
    spool.seal_new(exited=True)
    spool.close()
    sealed = (tmp_path / "task" / "stdout.rec").read_bytes()
    assert drone.log(task, "stdout", 0, sealed).status_code == 200
    assert drone.message(task, 0, "half way").status_code == 200
    assert drone.finish(task, stdout_size=len(sealed)).status_code == 200
    return drone, task, sealed


def _with_link(relay: RelayProcess, drone: DroneClient,
               work: Callable[[RelayLink], Awaitable[T]]) -> T:
    async def main() -> T:
        link = RelayLink(relay.url, drone.signer)
        try:
            return await asyncio.wait_for(work(link), HANG_GUARD)
        finally:
            await link.aclose()

    return asyncio.run(main())


def test_a_resend_of_stored_output_after_finish_ends_shipping_normally(
    relay: RelayProcess, finished: tuple[DroneClient, str, bytes], tmp_path: Path
) -> None:
    drone, task, sealed = finished
    # The same task dir, resumed: its sealed spool is walked, its final record found.
    spool = SealedSpool(task_key=KEY, task_id=task, stream="stdout",
                        plain=tmp_path / "task" / "stdout")

    async def ship(link: RelayLink) -> int:
        shipper = StreamShipper(link, task_id=task, stream="stdout", sealer=spool, acked=0)
        exited = asyncio.Event()
        exited.set()
        await shipper.run(exited)
        return shipper.acked

    assert _with_link(relay, drone, ship) == len(sealed)
    assert (tmp_path / "task" / "stdout.rec").read_bytes() == sealed  # nothing sealed twice


def test_new_output_after_finish_ends_shipping_with_task_finished(
    relay: RelayProcess, finished: tuple[DroneClient, str, bytes], tmp_path: Path
) -> None:
    drone, task, sealed = finished
    spool = sealer(tmp_path / "other", task, b"hello\nwritten after the finish\n")

    async def ship(link: RelayLink) -> None:
        shipper = StreamShipper(link, task_id=task, stream="stdout", sealer=spool, acked=0)
        exited = asyncio.Event()
        exited.set()
        await shipper.run(exited)

    with pytest.raises(TaskFinished, match=f"at {len(sealed)} bytes"):
        _with_link(relay, drone, ship)
    assert relay.data_dir.joinpath("logs", task, "stdout").read_bytes() == sealed


def test_a_new_message_after_finish_ends_the_inbox_with_task_finished(
    relay: RelayProcess, finished: tuple[DroneClient, str, bytes], tmp_path: Path
) -> None:
    drone, task, _ = finished
    inbox = tmp_path / "inbox"
    inbox.write_bytes(b"half way\ntoo late\n")

    async def ship(link: RelayLink) -> None:
        shipper = InboxShipper(link, task_id=task, inbox=inbox, state_path=tmp_path / "i.json",
                               task_key=drone.task_keys[task])
        await shipper.ship(final=True)

    # The first line is a resend (acknowledged); the second is new, and refused.
    with pytest.raises(TaskFinished):
        _with_link(relay, drone, ship)
