"""Messages the cockpit's workers post to its widgets.

Status and round-trip messages let a newer one replace a stale
one still waiting in the queue (`can_replace`), so a slow screen never works
through a backlog of connection news that is already out of date.
"""

from __future__ import annotations

from enum import StrEnum

from textual.message import Message


class Link(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    LOGIN_NEEDED = "login needed"


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
