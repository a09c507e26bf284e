"""``RelayClient`` used directly, as the cockpit uses it: live events and followers."""

from __future__ import annotations

import asyncio
import json

import pytest
from dragoon.cockpit.client import Event, RelayClient, RelayError
from dragoon.cockpit.client.config import SessionStore
from dragoon.cockpit.client.identity import signer_for
from dragoon.shared import e2e
from dragoon.shared.e2e import E2EError

from tests.cli.conftest import Pilot


def client_for(pilot: Pilot) -> RelayClient:
    """A client on the pilot's CLI session: the cockpit and the CLI share it."""
    session = SessionStore(pilot.env).load()
    assert session is not None
    return RelayClient(session.relay, signer=signer_for(session.key, env=pilot.env),
                       token=session.token, env=pilot.env)


def test_events_stream_task_changes_as_they_happen(pilot: Pilot, drone: str) -> None:
    async def scenario() -> list[Event]:
        async with client_for(pilot) as client:
            seen: list[Event] = []

            async def watch() -> None:
                async for event in client.events():
                    seen.append(event)
                    if event.kind == "task" and event.data.get("state") == "succeeded":
                        return

            watcher = asyncio.create_task(watch())
            # The task ends a second after it starts, long after the watcher connected.
            task = await client.submit(spec={"command": "sleep 1; echo evented"}, drone=drone)
            await asyncio.wait_for(watcher, 30)
            return [e for e in seen if e.kind == "task" and e.data["id"] == task["id"]]

    events = asyncio.run(scenario())
    states = [e.data["state"] for e in events]
    assert states[-1] == "succeeded"
    assert all(e.id is not None for e in events)


def test_follow_log_yields_every_byte_once_and_ends_at_eof(pilot: Pilot, drone: str) -> None:
    async def scenario() -> tuple[bytes, bool]:
        async with client_for(pilot) as client:
            task = await client.submit(
                spec={"command": "for i in $(seq 1 200); do echo row-$i; done"}, drone=drone)
            chunks = [c async for c in client.follow_log(task_id=task["id"])]
            return b"".join(c.data for c in chunks), chunks[-1].eof

    data, eof = asyncio.run(scenario())
    assert eof
    assert data.decode().split() == [f"row-{i}" for i in range(1, 201)]


def test_reads_smaller_than_a_record_still_hand_out_whole_records_and_boundaries(
        pilot: Pilot, drone: str) -> None:
    """``limit`` cuts the relay's answers inside records: the client reads on until a record
    is whole, and every ``next_offset`` it hands out is a record boundary to resume from;
    any other offset is refused rather than opened from the middle."""
    command = "echo first; sleep 0.5; echo second; sleep 0.5; echo third"

    async def scenario() -> tuple[bytes, list[tuple[int, int, int]], int, str]:
        async with client_for(pilot) as client:
            task = await client.submit(spec={"command": command}, drone=drone)
            async for _ in client.follow_log(task_id=task["id"]):
                pass  # until the task is over and all is stored
            data, reads, offset = b"", [], 0
            while True:
                chunk = await client.read_log(task_id=task["id"], offset=offset, limit=20)
                data += chunk.data
                reads.append((chunk.offset, chunk.next_offset, len(chunk.data)))
                offset = chunk.next_offset
                if chunk.eof:
                    break
            with pytest.raises(E2EError) as refused:
                await client.read_log(task_id=task["id"], offset=reads[0][1] - 1)
            stored = (await client.read_log(task_id=task["id"])).next_offset
            return data, reads, stored, refused.value.detail

    data, reads, stored, refused = asyncio.run(scenario())
    assert data == b"first\nsecond\nthird\n"
    assert reads[-1][1] == stored  # the 20-byte reads came to the end of what is stored
    for start, end, plain in reads:
        # Each read handed out whole records: their plaintext and 57 bytes each.
        assert end > start and (end - start - plain) % e2e.OVERHEAD == 0
    assert len(reads) >= 3
    assert "not a record boundary" in refused


def test_relay_errors_carry_code_status_and_detail(pilot: Pilot) -> None:
    async def scenario() -> None:
        async with client_for(pilot) as client:
            await client.task(task_id="t-zzzzzzzzzz")

    with pytest.raises(RelayError) as caught:
        asyncio.run(scenario())
    assert (caught.value.code, caught.value.status) == ("not_found", 404)
    assert caught.value.detail
    assert json.loads(json.dumps(caught.value.body))["error"] == "not_found"
