"""shared.models: the vocabulary every part agrees on."""

from __future__ import annotations

import pytest
from dragoon.shared.models import FINAL_STATES, DroneState, Stream, TaskState, exit_status_code


def test_final_states_are_the_ends_of_the_lifecycle() -> None:
    assert {s.value for s in FINAL_STATES} == {
        "succeeded", "failed", "timed_out", "cancelled", "lost"}
    assert not any(s.is_final for s in (TaskState.QUEUED, TaskState.DISPATCHED,
                                        TaskState.RUNNING))


def test_states_serialise_as_their_wire_strings() -> None:
    assert TaskState("timed_out") is TaskState.TIMED_OUT
    assert f"{DroneState.ONLINE}" == "online"
    assert [s.value for s in Stream] == ["stdout", "stderr"]


@pytest.mark.parametrize(("exit_code", "signal", "status"), [
    (0, None, 0), (3, None, 3), (None, 9, 137), (None, 15, 143), (None, None, 1), (0, 0, 0),
])
def test_exit_status_follows_the_shell_convention(exit_code: int | None, signal: int | None,
                                                   status: int) -> None:
    assert exit_status_code(exit_code, signal) == status
