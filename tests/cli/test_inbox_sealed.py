"""``dragoon inbox`` opens each message under its task's key, and shows a message the relay
altered as one line saying so, never as text. A real relay, a real drone, the real CLI;
the relay's database edited behind its back as its operator could."""

from __future__ import annotations

import base64
import sqlite3

from tests.cli.conftest import Pilot
from tests.support.relay import RelayProcess, wait_until

SECRET = "sealed-note-5c1e"


def _mine(pilot: Pilot, task_id: str) -> list[dict[str, object]]:
    return [m for m in pilot.json("inbox", "--no-ack") if m["task"] == task_id]


def test_inbox_shows_an_altered_message_as_an_error_line(pilot: Pilot, drone: str,
                                                        relay: RelayProcess) -> None:
    task_id = pilot.ok("submit", drone, "--",
                       f'echo "{SECRET} one" >> "$DRAGOON_INBOX"; '
                       f'echo "{SECRET} two" >> "$DRAGOON_INBOX"').strip()
    wait_until(lambda: len(_mine(pilot, task_id)) == 2, timeout=20, interval=0.2,
               message="two messages")
    assert [m["text"] for m in _mine(pilot, task_id)] == [f"{SECRET} one", f"{SECRET} two"]

    with sqlite3.connect(relay.data_dir / "relay.db", timeout=30) as conn:
        (sealed,) = conn.execute("SELECT sealed FROM messages WHERE task = ? AND idx = 1",
                                 (task_id,)).fetchone()
        raw = bytearray(base64.b64decode(sealed))
        raw[60] ^= 0x04  # a ciphertext byte
        conn.execute("UPDATE messages SET sealed = ? WHERE task = ? AND idx = 1",
                     (base64.b64encode(bytes(raw)).decode(), task_id))

    shown = _mine(pilot, task_id)
    assert shown[0]["text"] == f"{SECRET} one"
    assert "text" not in shown[1] and "does not open" in str(shown[1]["error"])
    table = pilot.ok("inbox", "--no-ack")
    lines = [line for line in table.splitlines() if task_id in line]
    assert len(lines) == 2, table
    assert lines[0].endswith(f"{SECRET} one")
    assert "[message not shown: message 1 of task" in lines[1] and SECRET not in lines[1]
