"""Data that crosses the wire and means the same to relay, drone and cockpit.

Field names of JSON bodies are documented in docs/api.md; this module holds
the vocabulary every part must agree on (task states and which are final).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class TaskState(StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


# `lost` is final for listings, yet a later report from the drone may replace it.
FINAL_STATES: Final = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.TIMED_OUT, TaskState.CANCELLED,
     TaskState.LOST}
)


class DroneState(StrEnum):
    PENDING = "pending"  # enrolled, never polled yet
    ONLINE = "online"
    OFFLINE = "offline"


class Stream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"


def exit_status_code(exit_code: int | None, signal: int | None) -> int:
    """The shell's convention, which `dragoon run` exits with: the code, or 128 + signal."""
    if signal:
        return 128 + signal
    return exit_code if exit_code is not None else 1
