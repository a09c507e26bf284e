"""The task's inbox file: each line appended to ``$DRAGOON_INBOX`` becomes one message.

Reading is by byte offset, so a restarted drone continues where it stopped;
each message carries its line index, and the relay acknowledges a repeated
``(task, index)`` with the same id, so a resend never doubles a message.

The file is the task's: it can delete it, replace it with a FIFO or a
symlink to ``/dev/zero``, or make it a terabyte long. So it is opened without
waiting and without following a symlink (``drone/safefile.py``), read in a
thread one window at a time, and only up to MAX_INBOX_BYTES; a file that is
no longer regular, or the cap, is said to the pilot once and the rest of the
file ignored. The drone's own notices (artifact refusals) never go through
the file: they wait in ``inbox.json`` and are sent after the task's lines,
numbered in the same sequence.

Every message is sealed under the task key before it leaves (shared/sealed_message.py):
one record at its index, so the relay stores what it cannot read, and cannot move to
another task or index. The cap (MESSAGE_CAP) is on the text, here; the relay's is on
the sealed record.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from dragoon.drone import safefile
from dragoon.drone.client import RelayLink, RelayUnavailable, error_code
from dragoon.drone.shipper import TaskFinished
from dragoon.drone.state import read_json, write_json
from dragoon.shared.sealed_message import seal_message
from dragoon.shared.spec import MESSAGE_CAP, SpecError, check_message

log = logging.getLogger("dragoon.drone")

READ_WINDOW: Final = 64 * 1024  # a line longer than this is cut, the rest of it skipped
MAX_INBOX_BYTES: Final = 64 << 20  # what one task's inbox may hold; the rest is not read


def cap_message(raw: bytes) -> str:
    """The line as text within 4 KiB, saying how much was cut when it was too long.

    NUL becomes U+FFFD like undecodable bytes: the relay refuses text holding it.
    """
    text = raw.decode("utf-8", errors="replace").rstrip("\r").replace("\x00", "\ufffd")
    encoded = text.encode("utf-8")
    if len(encoded) <= MESSAGE_CAP:
        return text
    note = f" … [truncated: {len(raw)} bytes, cap {MESSAGE_CAP}]"
    room = MESSAGE_CAP - len(note.encode("utf-8"))
    head = encoded[:room].decode("utf-8", errors="ignore")
    return head + note


def sendable(text: str) -> bool:
    """Whether a line is a message by shared/spec.py's rule (the one `dragoon notify` and the
    relay apply): a blank line of the inbox file is skipped, never sent as an empty message."""
    try:
        check_message(text)
    except SpecError:
        return False
    return True


@dataclass
class InboxState:
    offset: int = 0  # bytes of the inbox file already turned into messages
    index: int = 0  # index of the next message
    skipping: bool = False  # inside an over-long line whose head was already sent
    notes: list[str] = field(default_factory=list)  # the drone's own messages, not yet sent
    closed: str | None = None  # why the file is no longer read (a FIFO, the cap), if so


def read_window(path: Path, offset: int) -> tuple[bytes, int]:
    """Up to READ_WINDOW bytes from ``offset``, never past MAX_INBOX_BYTES, and the file's size.

    Raises ``safefile.NotRegular`` (never waits) when the inbox is no longer a
    regular file, ``FileNotFoundError`` when it is gone.
    """
    fd, found = safefile.open_regular(path)
    try:
        end = min(found.st_size, MAX_INBOX_BYTES)
        if offset >= end:
            return b"", found.st_size
        return os.pread(fd, min(READ_WINDOW, end - offset), offset), found.st_size
    finally:
        os.close(fd)


def split_messages(
    data: bytes, *, final: bool, skipping: bool
) -> tuple[list[tuple[bytes, int]], int, bool]:
    """Complete lines in ``data`` → ([(message, end offset)], bytes consumed, still skipping).

    At ``final`` (the task has exited), a last line without newline is a
    message too. A window without any newline that fills READ_WINDOW is sent
    cut, and the rest of that line is skipped.
    """
    messages: list[tuple[bytes, int]] = []
    pos = 0
    while pos < len(data):
        newline = data.find(b"\n", pos)
        if newline < 0:
            rest = data[pos:]
            if skipping:
                return messages, len(data), not final
            if final and rest:
                messages.append((rest, len(data)))
                return messages, len(data), False
            if len(rest) >= READ_WINDOW:
                messages.append((rest, len(data)))
                return messages, len(data), True
            return messages, pos, False
        if skipping:
            skipping = False
        else:
            messages.append((data[pos:newline], newline + 1))
        pos = newline + 1
    return messages, pos, skipping


class InboxShipper:
    def __init__(self, client: RelayLink, *, task_id: str, inbox: Path, state_path: Path,
                 task_key: bytes | None) -> None:
        self.client = client
        self.task_id = task_id
        self.task_key = task_key
        self.inbox = inbox
        self.state_path = state_path
        saved = read_json(state_path)
        try:
            self.state = InboxState(**saved) if isinstance(saved, dict) else InboxState()
        except TypeError:  # a record from another version: start over, the relay dedups
            self.state = InboxState()

    def note(self, *texts: str) -> None:
        """Queue the drone's own messages (kept durably; sent after the task's lines)."""
        self.state.notes.extend(texts)
        self._save(durable=True)

    async def ship(self, *, final: bool = False) -> None:
        """Send every complete line past the saved offset; RelayUnavailable stops midway safely."""
        while self.state.closed is None:
            start = self.state.offset
            try:
                data, size = await asyncio.to_thread(read_window, self.inbox, start)
            except FileNotFoundError:
                break
            except OSError as exc:  # NotRegular included: a FIFO, a symlink, a device
                self._close(str(exc), f"dragoon: $DRAGOON_INBOX is {exc} now; the task's "
                                      "later messages are not read")
                break
            if not data:
                if size > MAX_INBOX_BYTES:
                    self._close("over its cap", f"dragoon: the inbox is over {MAX_INBOX_BYTES} "
                                                "bytes; the rest of it is not read")
                    continue
                break
            # A line still open at the end of what can be read ends there once the task has
            # exited, or at the cap; a window in the middle of the file never ends one.
            reach = start + len(data)
            last = reach >= min(size, MAX_INBOX_BYTES) and (final or reach >= MAX_INBOX_BYTES)
            messages, consumed, skipping = split_messages(
                data, final=last, skipping=self.state.skipping)
            if not messages and consumed == 0:
                break
            for raw, end in messages:
                text = cap_message(raw)
                if sendable(text):
                    await self._send(text)
                    # Index and offset move together, so a retry resends the same (task, index).
                    self.state.index += 1
                self.state.offset = start + end
                self.state.skipping = skipping if end == consumed else False
                self._save()
            self.state.offset = start + consumed
            self.state.skipping = skipping
            self._save()
        while self.state.notes:
            await self._send(self.state.notes[0])
            self.state.index += 1
            del self.state.notes[0]
            self._save(durable=True)

    def _close(self, why: str, notice: str) -> None:
        log.warning("task %s: inbox %s: %s; the rest of it is ignored", self.task_id,
                    self.inbox, why)
        self.state.closed = why
        self.note(notice)

    def _save(self, *, durable: bool = False) -> None:
        write_json(self.state_path, self.state.__dict__, durable=durable)

    async def _send(self, text: str) -> None:
        if self.task_key is None:
            # A task from before sealing (task.json holds no key): nothing may go in clear.
            log.warning("task %s: no task key; message %d not sent", self.task_id,
                        self.state.index)
            return
        sealed = seal_message(self.task_key, task_id=self.task_id, index=self.state.index,
                              text=text)
        body = {"task": self.task_id, "index": self.state.index, "sealed": sealed}
        response = await self.client.request("POST", "/v1/worker/message", json_body=body)
        if response.status_code in (413, 422):
            # This message can never be stored: skipped, or the task's finish would wait forever.
            log.warning("task %s: message %d refused by the relay (HTTP %d %s); skipped",
                        self.task_id, self.state.index, response.status_code,
                        error_code(response))
            return
        if response.status_code == 409 and error_code(response) == "task_finished":
            raise TaskFinished(f"relay takes no new message for finished task {self.task_id}")
        if response.status_code != 200:
            raise RelayUnavailable(f"message refused: HTTP {response.status_code} "
                                   f"{error_code(response)}")
