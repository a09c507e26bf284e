"""An inbox message sealed under its task's key (issue 13, piece 4): what the relay keeps.

A task's messages are read one at a time (``dragoon inbox``, the cockpit's inbox, each
acknowledged on its own), never as one stream, so each is a stream of its own: **one
final record** (shared/e2e.py, kind ``inbox``, name ``inbox``) standing at
``Position(index, 0)``, where ``index`` is the message's index in its task (the line of
``$DRAGOON_INBOX``, then the drone's own notices). The record's associated data holds
the task id and its clear header holds the index, so a message opens only as message
``index`` of its own task: a relay that moves one to another task or another index, or
hands one out again under an index it does not stand at, gets an ``E2EError``, and so
does one that alters a byte. What the relay can still do is withhold a message (a gap
in the indexes shows it) or show one twice (the pilot keeps one per task and index).
"""

from __future__ import annotations

from typing import Final

from dragoon.shared import e2e

KIND: Final = "inbox"
NAME: Final = "inbox"


def seal_message(task_key: bytes, *, task_id: str, index: int, text: str) -> str:
    """Message ``index`` of ``task_id`` as one final record, base64 as on the wire."""
    writer = e2e.RecordWriter(task_key, task_id=task_id, kind=KIND, name=NAME,
                              at=e2e.Position(index, 0))
    return e2e.b64(writer.seal(text.encode("utf-8"), final=True))


def sealed_size(sealed: object, *, index: int) -> int:
    """The stored size of a sealed message (its plaintext + e2e.OVERHEAD); E2EError when
    it is not one record claiming ``index``. What the relay checks without the key: it
    holds a drone to the form, the pilot's open holds the relay to the content."""
    raw = e2e.unb64(sealed, what="the sealed message")
    if len(raw) < e2e.OVERHEAD:
        raise e2e.E2EError("the sealed message is shorter than a record")
    header = e2e.parse_header(raw)
    if header.record_size != len(raw) or not header.final:
        raise e2e.E2EError("the sealed message is not one whole final record")
    if header.index != index or header.offset != 0:
        raise e2e.E2EError(f"the sealed message stands at index {header.index}, not {index}")
    return len(raw)


def open_message(task_key: bytes, *, task_id: str, index: int, sealed: object) -> str:
    """The text of message ``index`` of ``task_id``; E2EError with one line when the relay
    altered it, moved it from another task or index, or cut it."""
    raw = e2e.unb64(sealed, what="the sealed message")
    reader = e2e.RecordReader(task_key, task_id=task_id, kind=KIND, name=NAME,
                              at=e2e.Position(index, 0))
    try:
        plaintext = reader.feed(raw)
    except e2e.E2EError:
        raise e2e.E2EError(f"message {index} of task {task_id} does not open (altered, or "
                           "moved from another task or index)") from None
    if not reader.finished or reader.consumed != len(raw):
        raise e2e.E2EError(f"message {index} of task {task_id} is not one whole sealed "
                           "record")
    return plaintext.decode("utf-8", errors="replace")
