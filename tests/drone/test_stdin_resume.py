"""drone/stdin.py resumes in the sealed stream exactly, against a real relay.

The drone's place in the pilot's sealed stdin is ``stdin.pos`` (stored offset, record
index, plaintext offset); its spool is the plaintext. A drone killed between writing a
record's plaintext to the spool and writing ``stdin.pos`` comes back with a spool ahead
of its position: it must reopen those records from the relay and feed every byte once.
Here the task dir is left as such a kill leaves it, and a real ``StdinFetcher`` (with a
real ``RelayLink``) takes over. Also: records larger than what the drone asks for at
once arrive whole (it asks again from the record's start).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.drone import stdin as drone_stdin
from dragoon.drone.client import RelayLink
from dragoon.shared.e2e import RecordWriter

from tests.support.relay import DroneClient, PilotSession, RelayProcess

HANG_GUARD = 30.0  # a deadline against a loop, not a timing the test measures


def _feed(pilot: PilotSession, task: str, offset: int, data: bytes, *,
          eof: bool = False) -> int:
    params: dict[str, Any] = {"offset": offset, "sha256": hashlib.sha256(data).hexdigest(),
                              "wait": 0}
    if eof:
        params["eof"] = True
    answer = pilot.post(f"/v1/tasks/{task}/stdin", params=params, content=data)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["next_offset"])


def _sealed_stdin(pilot: PilotSession, drone: DroneClient, task: str,
                  pieces: list[bytes]) -> list[int]:
    """``pieces`` posted as one record each, then the final one; the stored boundaries."""
    key = drone.task_keys[task]
    writer = RecordWriter(key, task_id=task, kind="stdin", name="stdin")
    offsets = [0]
    for piece in pieces:
        offsets.append(_feed(pilot, task, offsets[-1], writer.seal(piece)))
    _feed(pilot, task, offsets[-1], writer.seal(b"", final=True), eof=True)
    return offsets


def _fetch(relay: RelayProcess, drone: DroneClient, task: str, task_dir: Path, *,
           reading: bool = False) -> None:
    """A StdinFetcher until the pilot's EOF; ``reading``: a stand-in for the wrapper, which
    publishes in ``stdin.fed`` that the task read everything spooled so far."""

    async def wrapper() -> None:
        while True:
            size = (task_dir / drone_stdin.SPOOL).stat().st_size
            (task_dir / drone_stdin.FED).write_text(str(size))
            await asyncio.sleep(0.01)

    async def main() -> None:
        link = RelayLink(relay.url, drone.signer)
        fetcher = drone_stdin.StdinFetcher(link, task_id=task, task_dir=task_dir,
                                           task_key=drone.task_keys[task])
        side = asyncio.ensure_future(wrapper()) if reading else None
        try:
            await asyncio.wait_for(fetcher.run(asyncio.Event()), HANG_GUARD)
        finally:
            if side is not None:
                side.cancel()
            await link.aclose()

    asyncio.run(main())


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path / "relay") as process:
        yield process


def _task(relay: RelayProcess) -> tuple[PilotSession, DroneClient, str]:
    pilot = relay.pilot()
    drone = relay.drone("box", pilot=pilot)
    task = pilot.submit("cat", drone=drone.name, stdin=True)["id"]
    assert [t["id"] for t in drone.poll().json()["tasks"]] == [task]
    return pilot, drone, task


@pytest.mark.parametrize("killed", ["mid-write, before any stdin.pos",
                                    "after the spool write, before stdin.pos"])
def test_a_drone_killed_between_spool_and_position_feeds_each_byte_once(
        relay: RelayProcess, tmp_path: Path, killed: str) -> None:
    pilot, drone, task = _task(relay)
    pieces = [b"alpha-" * 50, b"bravo-" * 70, b"charlie-" * 30]
    offsets = _sealed_stdin(pilot, drone, task, pieces)
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    drone_stdin.prepare(task_dir)
    spool = task_dir / drone_stdin.SPOOL
    if killed.startswith("mid-write"):
        # Record 0 whole and half of record 1 reached the spool; stdin.pos was never written.
        spool.write_bytes(pieces[0] + pieces[1][:100])
    else:
        # Records 0 and 1 reached the spool; stdin.pos still says record 1 (the drone had
        # asked from there, so the relay dropped record 0).
        spool.write_bytes(pieces[0] + pieces[1])
        (task_dir / drone_stdin.POS).write_text(json.dumps(
            {"stored": offsets[1], "index": 1, "offset": len(pieces[0])}))
        took = drone.get(f"/v1/worker/tasks/{task}/stdin", params={"offset": offsets[1]})
        assert took.status_code == 200, took.text
    _fetch(relay, drone, task, task_dir)
    whole = b"".join(pieces)
    assert spool.read_bytes() == whole
    assert json.loads((task_dir / drone_stdin.EOF_MARK).read_text()) == {"size": len(whole)}
    assert not (task_dir / drone_stdin.NOTE).exists()


def test_a_record_larger_than_one_ask_arrives_whole(relay: RelayProcess, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The drone asks for its room + a record's overhead; a record bigger than that is
    asked for again from its start, whole, and nothing below it is acknowledged first."""
    pilot, drone, task = _task(relay)
    pieces = [bytes(range(256)) * 1000, b"tail"]  # 256000 bytes, then 4
    _sealed_stdin(pilot, drone, task, pieces)
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    drone_stdin.prepare(task_dir)
    monkeypatch.setattr(drone_stdin, "AHEAD", 1000)  # little room: the first ask is short
    _fetch(relay, drone, task, task_dir, reading=True)
    assert (task_dir / drone_stdin.SPOOL).read_bytes() == b"".join(pieces)
    assert not (task_dir / drone_stdin.NOTE).exists()
