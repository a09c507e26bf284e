"""The task's inbox file: each line appended to ``$DRAGOON_INBOX`` becomes one message.

Reading is by byte offset, so a restarted drone continues where it stopped;
each message carries its line index, and the relay acknowledges a repeated
``(task, index)`` with the same id, so a resend never doubles a message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dragoon.drone.client import RelayLink, RelayUnavailable, error_code
from dragoon.drone.shipper import TaskFinished
from dragoon.drone.state import read_json, write_json

MESSAGE_CAP: Final = 4096  # bytes of UTF-8 per message
READ_WINDOW: Final = 64 * 1024  # a line longer than this is cut, the rest of it skipped


def cap_message(raw: bytes) -> str:
    """The line as text within 4 KiB, saying how much was cut when it was too long."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    encoded = text.encode("utf-8")
    if len(encoded) <= MESSAGE_CAP:
        return text
    note = f" … [truncated: {len(raw)} bytes, cap {MESSAGE_CAP}]"
    room = MESSAGE_CAP - len(note.encode("utf-8"))
    head = encoded[:room].decode("utf-8", errors="ignore")
    return head + note


@dataclass
class InboxState:
    offset: int = 0  # bytes of the inbox file already turned into messages
    index: int = 0  # index of the next message
    skipping: bool = False  # inside an over-long line whose head was already sent


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
    def __init__(self, client: RelayLink, *, task_id: str, inbox: Path, state_path: Path) -> None:
        self.client = client
        self.task_id = task_id
        self.inbox = inbox
        self.state_path = state_path
        saved = read_json(state_path)
        self.state = InboxState(**saved) if isinstance(saved, dict) else InboxState()

    def pending(self) -> bool:
        try:
            return self.inbox.stat().st_size > self.state.offset
        except FileNotFoundError:
            return False

    async def ship(self, *, final: bool = False) -> None:
        """Send every complete line past the saved offset; RelayUnavailable stops midway safely."""
        while self.pending():
            with open(self.inbox, "rb") as handle:
                data = os.pread(handle.fileno(), READ_WINDOW, self.state.offset)
            messages, consumed, skipping = split_messages(
                data, final=final, skipping=self.state.skipping)
            if not messages and consumed == 0:
                return
            start = self.state.offset
            for raw, end in messages:
                await self._send(cap_message(raw))
                # Index and offset move together, so a retry resends the same (task, index).
                self.state.index += 1
                self.state.offset = start + end
                self.state.skipping = skipping if end == consumed else False
                self._save()
            self.state.offset = start + consumed
            self.state.skipping = skipping
            self._save()

    def _save(self) -> None:
        write_json(self.state_path, self.state.__dict__, durable=False)

    async def _send(self, text: str) -> None:
        body = {"task": self.task_id, "index": self.state.index, "text": text}
        response = await self.client.request("POST", "/v1/worker/message", json_body=body)
        if response.status_code == 409 and error_code(response) == "task_finished":
            raise TaskFinished(f"relay takes no new message for finished task {self.task_id}")
        if response.status_code != 200:
            raise RelayUnavailable(f"message refused: HTTP {response.status_code} "
                                   f"{error_code(response)}")
