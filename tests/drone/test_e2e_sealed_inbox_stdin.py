"""The inbox and stdin from the attacker's side: a relay that edits what it stores.

A real relay and real drones. The relay holds every message sealed by the drone and
every stdin byte sealed by the pilot (shared/sealed_message.py, shared/e2e.py); here
the relay's storage is edited behind its back, as a relay's operator could: a message
row swapped for another task's, moved to another index, replayed under a new one, a
byte flipped; stdin records flipped, reordered, repeated, cut short. The pilot's real client
shows an error where the text would be, never the text, and the drone feeds the task
none of the edited stdin: the task reads EOF after the bytes that opened, and its
notes say why.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from dragoon.cockpit.client import RelayClient
from dragoon.cockpit.formatting import message_text
from dragoon.shared.e2e import RecordWriter

from tests.drone.conftest import Fleet
from tests.support.relay import wait_until

MARK = "inbox-secret-7f3a"  # in every message's text: the relay must hold none of it


def _client_messages(fleet: Fleet) -> list[dict[str, Any]]:
    """The inbox as the real client (cockpit/client) opens it, for the test's pilot."""

    async def read() -> list[dict[str, Any]]:
        client = RelayClient(fleet.relay.url, signer=fleet.pilot.signer, env=fleet.pilot.env,
                             token=fleet.pilot.token, timeout=10.0)
        async with client:
            return [dict(m) for m in await client.messages(limit=1000)]

    return asyncio.run(read())


def _db(fleet: Fleet) -> sqlite3.Connection:
    conn = sqlite3.connect(fleet.relay.data_dir / "relay.db", timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def _flip(sealed: str) -> str:
    raw = bytearray(base64.b64decode(sealed))
    raw[-1] ^= 0x01  # the last byte of the tag
    return base64.b64encode(bytes(raw)).decode()


def test_a_relay_that_edits_its_message_rows_gets_errors_shown_never_text(
        fleet: Fleet) -> None:
    fleet.drone("d1")
    lines = "; ".join(f'echo "{MARK} a{i}" >> "$DRAGOON_INBOX"' for i in range(4))
    task_a = fleet.submit(lines, drone="d1")
    task_b = fleet.submit(f'echo "{MARK} b0" >> "$DRAGOON_INBOX"', drone="d1")
    for task in (task_a, task_b):
        assert fleet.wait_state(task)["state"] == "succeeded"
    wait_until(lambda: len(fleet.pilot.inbox(limit=1000)) == 5, timeout=20,
               message="the five messages at the relay")

    # What the relay keeps and says holds no text.
    listed = fleet.pilot.get("/v1/messages", params={"limit": 1000})
    assert MARK not in listed.text
    for name in ("relay.db", "relay.db-wal"):
        path = fleet.relay.data_dir / name
        assert not path.exists() or MARK.encode() not in path.read_bytes(), name

    opened = {(m["task"], m["index"]): m for m in _client_messages(fleet)}
    assert {k: m.get("text") for k, m in opened.items()} == {
        (task_a, 0): f"{MARK} a0", (task_a, 1): f"{MARK} a1", (task_a, 2): f"{MARK} a2",
        (task_a, 3): f"{MARK} a3", (task_b, 0): f"{MARK} b0"}

    with _db(fleet) as conn:
        rows = {(r["task"], r["idx"]): r for r in conn.execute("SELECT * FROM messages")}
        edits = [
            # a0's text swapped for another task's message at the same index
            ("UPDATE messages SET sealed = ? WHERE id = ?",
             (rows[(task_b, 0)]["sealed"], rows[(task_a, 0)]["id"])),
            # a1 moved to another index
            ("UPDATE messages SET idx = 9 WHERE id = ?", (rows[(task_a, 1)]["id"],)),
            # a2 with a byte flipped
            ("UPDATE messages SET sealed = ? WHERE id = ?",
             (_flip(rows[(task_a, 2)]["sealed"]), rows[(task_a, 2)]["id"])),
        ]
        for statement, args in edits:
            conn.execute(statement, args)
        # a3 replayed under a new index, as a message the task never sent
        a3 = rows[(task_a, 3)]
        conn.execute("INSERT INTO messages (task, drone, idx, sealed, size, created_at)"
                     " VALUES (?, ?, 4, ?, ?, ?)",
                     (task_a, a3["drone"], a3["sealed"], a3["size"], time.time()))

    shown = {(m["task"], m["index"]): m for m in _client_messages(fleet)}
    for key in [(task_a, 0), (task_a, 9), (task_a, 2), (task_a, 4)]:
        assert "text" not in shown[key] and shown[key]["error"], shown[key]
        assert MARK not in message_text(shown[key])
        assert message_text(shown[key]).startswith("[message not shown: ")
    assert "message 0 of task" in shown[(task_a, 0)]["error"]
    # What the relay did not touch still opens.
    assert shown[(task_a, 3)]["text"] == f"{MARK} a3"
    assert shown[(task_b, 0)]["text"] == f"{MARK} b0"


# -- stdin ---------------------------------------------------------------------------------


def _feed(fleet: Fleet, task: str, offset: int, data: bytes, *, eof: bool = False) -> int:
    params: dict[str, Any] = {"offset": offset, "sha256": hashlib.sha256(data).hexdigest(),
                              "wait": 0}
    if eof:
        params["eof"] = True
    answer = fleet.pilot.post(f"/v1/tasks/{task}/stdin", params=params, content=data)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["next_offset"])


def _chunk(folder: Path, offset: int) -> Path:
    return folder / f"{offset:020d}"


@pytest.mark.parametrize("attack", ["flip", "reorder", "repeat", "cut", "none"])
def test_stdin_the_relay_edited_is_never_fed(fleet: Fleet, attack: str) -> None:
    """Four records (the third and fourth the same length) and the final one, stored while
    the task waits for its drone; the relay's store is edited; then the drone starts."""
    drone = fleet.drone("d1", start=False)
    task = fleet.submit("cat; echo after-eof", drone="d1", stdin=True)
    key = fleet.pilot.task_key(task)
    assert key is not None
    writer = RecordWriter(key, task_id=task, kind="stdin", name="stdin")
    pieces = [b"good-1\n", b"good-2\n", b"evil-3\n", b"late-4\n"]
    offsets = [0]
    for piece in pieces:
        offsets.append(_feed(fleet, task, offsets[-1], writer.seal(piece)))
    _feed(fleet, task, offsets[-1], writer.seal(b"", final=True), eof=True)

    folder = fleet.relay.data_dir / "stdin" / task
    third, fourth = _chunk(folder, offsets[2]), _chunk(folder, offsets[3])
    if attack == "flip":
        raw = bytearray(third.read_bytes())
        raw[-3] ^= 0x20
        third.write_bytes(bytes(raw))
    elif attack == "reorder":
        a, b = third.read_bytes(), fourth.read_bytes()
        third.write_bytes(b)
        fourth.write_bytes(a)
    elif attack == "repeat":  # the third record again where the fourth stands
        fourth.write_bytes(third.read_bytes())
    elif attack == "cut":  # the stream ends after good-2, as if the pilot had closed it
        for offset in offsets[2:]:
            _chunk(folder, offset).unlink()
        (folder / "state.json").write_text(json.dumps(
            {"end": offsets[2], "acked": 0, "eof": True}))

    drone.start()
    done = fleet.wait_state(task, timeout=30)
    assert done["state"] == "succeeded", done
    out = fleet.output(task)
    if attack == "none":
        assert out == b"good-1\ngood-2\nevil-3\nlate-4\nafter-eof\n"
        assert not done.get("notes")
        return
    # Never a byte of what was edited: the records before it, then EOF.
    fed = b"good-1\ngood-2\nevil-3\n" if attack == "repeat" else b"good-1\ngood-2\n"
    assert out == fed + b"after-eof\n"
    notes = done.get("notes") or []
    assert len(notes) == 1, notes
    assert notes[0].startswith(f"stdin stopped after {len(fed)} bytes: "), notes
    reason = {"flip": "record 2 does not open",
              "reorder": "record 3 stands where record 2 belongs",
              "repeat": "record 2 stands where record 3 belongs",
              "cut": "without the pilot's final record"}[attack]
    assert reason in notes[0], notes
