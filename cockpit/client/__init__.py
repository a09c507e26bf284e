"""The pilot's API client for the relay, shared by the CLI and the cockpit.

Private modules hold the implementation; this package re-exports the public
surface, so importers never depend on how it is split up.
"""

from dragoon.cockpit.client._client import LONG_POLL, RelayClient
from dragoon.cockpit.client._errors import RelayError
from dragoon.cockpit.client._retry import Backoff
from dragoon.cockpit.client._types import (
    Artifact,
    Drone,
    Event,
    Fetch,
    Job,
    JobPage,
    JobSubmitted,
    JoinTokenAnswer,
    LogChunk,
    Message,
    Session,
    SpecJSON,
    StdinAnswer,
    Task,
    TaskPage,
    TrialSubmit,
)

__all__ = [
    "LONG_POLL",
    "Artifact",
    "Backoff",
    "Drone",
    "Event",
    "Fetch",
    "Job",
    "JobPage",
    "JobSubmitted",
    "JoinTokenAnswer",
    "LogChunk",
    "Message",
    "RelayClient",
    "RelayError",
    "Session",
    "SpecJSON",
    "StdinAnswer",
    "Task",
    "TaskPage",
    "TrialSubmit",
]
