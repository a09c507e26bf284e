"""The pilot's API client for the relay, shared by the CLI and the cockpit.

Private modules hold the implementation; this package re-exports the public
surface, so importers never depend on how it is split up.
"""

from cockpit.client._client import LONG_POLL, RelayClient
from cockpit.client._errors import ApiError
from cockpit.client._retry import Backoff
from cockpit.client._types import (
    Artifact,
    Drone,
    Event,
    Fetch,
    JoinTokenAnswer,
    LogChunk,
    Message,
    Session,
    Spec,
    Task,
    TaskPage,
)

__all__ = [
    "LONG_POLL",
    "ApiError",
    "Artifact",
    "Backoff",
    "Drone",
    "Event",
    "Fetch",
    "JoinTokenAnswer",
    "LogChunk",
    "Message",
    "RelayClient",
    "Session",
    "Spec",
    "Task",
    "TaskPage",
]
