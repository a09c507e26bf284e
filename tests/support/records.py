"""Opening a task's sealed output in tests, as the pilot does (cockpit/client/_logs.py).

The relay stores what the drone sealed (shared/e2e.py records, kind ``out``); a test that
reads the stored bytes (``GET /log`` or the relay's ``logs/<task>/<stream>`` file) opens them
here under the task key its ``PilotSession`` sealed the task with (``task_keys``, by the
task's ``order_id``).
"""

from __future__ import annotations

from typing import Any

from dragoon.shared import e2e


def task_key(pilot: Any, task_id: str) -> bytes:
    """The key ``pilot`` (a PilotSession) sealed ``task_id`` under."""
    answer = pilot.get(f"/v1/tasks/{task_id}")
    assert answer.status_code == 200, answer.text
    order_id = answer.json()["order_id"]
    return bytes(pilot.task_keys[order_id])


def reader(key: bytes, task_id: str, stream: str) -> e2e.RecordReader:
    return e2e.RecordReader(key, task_id=task_id, kind="out", name=stream)


def open_stream(key: bytes, task_id: str, stream: str, stored: bytes, *,
                whole: bool = False) -> bytes:
    """The plaintext of ``stored`` (a stream's bytes from offset 0); with ``whole``, the
    stream must end with its final record and nothing after it."""
    opener = reader(key, task_id, stream)
    plaintext = opener.feed(stored)
    if whole:
        assert opener.finished, f"{task_id} {stream}: no final record"
        assert not opener.partial, f"{task_id} {stream}: bytes after the last record"
    return plaintext


def stored_log(pilot: Any, task_id: str, stream: str = "stdout") -> bytes:
    """Every byte the relay holds of the stream, as stored (sealed)."""
    chunks: list[bytes] = []
    offset = 0
    while True:
        answer = pilot.get(f"/v1/tasks/{task_id}/log",
                           params={"stream": stream, "offset": offset, "limit": 1 << 20})
        assert answer.status_code == 200, answer.text
        if not answer.content:
            return b"".join(chunks)
        chunks.append(answer.content)
        offset += len(answer.content)


def output(pilot: Any, task_id: str, stream: str = "stdout", *, whole: bool = False) -> bytes:
    """The stream's plaintext as far as the relay holds it, opened like the pilot does."""
    return open_stream(task_key(pilot, task_id), task_id, stream,
                       stored_log(pilot, task_id, stream), whole=whole)


def seal(key: bytes, task_id: str, stream: str, data: bytes, *, final: bool = True) -> bytes:
    """``data`` as one stream's records from its start, as a drone seals it (a test's fake
    drone posts these)."""
    writer = e2e.RecordWriter(key, task_id=task_id, kind="out", name=stream)
    return b"".join(writer.seal_all(data, record=256 * 1024, final=final))
