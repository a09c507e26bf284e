"""The relay's output cap on sealed output: the relay stores up to the cap and says so out of
band; the pilot shows what opened and knows the stream was cut there, not by the task."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from dragoon.cockpit.client import LogChunk, RelayClient

from tests.drone.conftest import Fleet
from tests.support.relay import RelayProcess

CAP = 3000


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[Fleet]:
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.2,
                                                  "output_cap": CAP}) as relay:
        group = Fleet(tmp_path, relay, relay.pilot("alice"))
        try:
            yield group
        finally:
            group.close()
            relay.kill9()


def test_output_past_the_cap_ends_cut_at_the_cap_not_as_tampered(capped: Fleet,
                                                                  tmp_path: Path) -> None:
    capped.drone("d1")
    # 40 short lines fit under the cap however they are sealed (at most 40 records of
    # 8 bytes and 57 each); the 5000 zeros after them cross it.
    task_id = capped.submit("for i in $(seq 10 49); do echo line-$i; sleep 0.01; done; "
                            "head -c 5000 /dev/zero", drone="d1")
    task = capped.wait_state(task_id, timeout=60)
    assert task["state"] == "succeeded" and task["output_truncated"] is True
    stored = capped.stored(task_id)
    # The cap counts both streams as stored: stderr's one empty final record (57 bytes)
    # may land before stdout reaches the cap (it did on a loaded machine), and takes its room.
    assert len(stored) + len(capped.stored(task_id, "stderr")) == CAP
    assert b"line-10\n" not in stored  # sealed, and cut at the cap

    async def follow() -> list[LogChunk]:
        client = RelayClient(capped.relay.url, signer=capped.pilot.signer,
                             token=capped.pilot.token, timeout=10.0,
                             env=capped.pilot.env)
        async with client:
            return [c async for c in client.follow_log(task_id=task_id)]

    chunks = asyncio.run(follow())
    shown = b"".join(c.data for c in chunks)
    assert chunks[-1].eof and chunks[-1].cut_at == CAP  # said, not taken as a cut by the relay
    lines = b"".join(f"line-{i}\n".encode() for i in range(10, 50))
    assert shown.startswith(lines) and set(shown[len(lines):]) <= {0}
    assert len(shown) < len(lines) + 5000
