"""The cockpit's messages: what workers report and what screens ask of the app.

Screens never import the app (that would tie app ↔ screens in a knot): a
screen posts a request below and Textual bubbles it from the screen to the
app, whose handler decides what happens (Posting's and Harlequin's way).
What a screen needs to read, it is given when it is made (the shared
`CockpitState`, the clock, the read-only flag).

Status and round-trip messages let a newer one replace a stale one still
waiting in the queue (`can_replace`), so a slow screen never works through a
backlog of connection news that is already out of date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from textual.message import Message


class Link(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    LOGIN_NEEDED = "login needed"


# --------------------------------------------------------------------------- from workers


class ConnectionStatus(Message):
    """The link to the relay changed: the bar shows it, a return triggers a resync."""

    def __init__(self, link: Link, detail: str = "") -> None:
        super().__init__()
        self.link = link
        self.detail = detail

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ConnectionStatus)


class RoundTrip(Message):
    """One measured round trip to the relay, in seconds."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RoundTrip)


class ActionFailed(Message):
    """An action on the relay failed; the app shows one line, never a traceback."""

    def __init__(self, what: str, error: BaseException) -> None:
        super().__init__()
        self.what = what
        self.error = error


# --------------------------------------------------------------------------- from screens


@dataclass
class AckRequested(Message):
    """The inbox marked these messages read: acknowledge them on the relay."""

    ids: list[int] = field(default_factory=list)


@dataclass
class TaskJumpRequested(Message):
    """Go back to the main screen with this task selected and its log attached."""

    task_id: str


@dataclass
class ArtifactsRequested(Message):
    """A task detail opened: list the task's artifacts (the app loads them in a worker)."""

    task_id: str


@dataclass
class DownloadRequested(Message):
    """Download this artifact of the task into the download directory."""

    task_id: str
    artifact: dict[str, Any]
