"""relay/floodlog.py: a flood of one kind of message makes a line a second and a count."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable

import pytest
from dragoon.relay.floodlog import FloodLog, install_accept_error_handler


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        self.pending.append((self.now + delay, callback))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [cb for at, cb in self.pending if at <= self.now]
        self.pending = [(at, cb) for at, cb in self.pending if at > self.now]
        for callback in due:
            callback()


class Records:
    """The warnings of logger ``test.flood`` (caplog's list is replaced between phases)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def __len__(self) -> int:
        return len(self.all())

    def __getitem__(self, index: int) -> logging.LogRecord:
        return self.all()[index]

    def all(self) -> list[logging.LogRecord]:
        return [r for r in self._caplog.records if r.name == "test.flood"]


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Records:
    caplog.set_level(logging.WARNING, logger="test.flood")
    return Records(caplog)


def test_a_burst_makes_one_line_then_a_count_at_the_end_of_the_second(
    records: Records,
) -> None:
    clock = Clock()
    flood = FloodLog(logging.getLogger("test.flood"), clock=lambda: clock.now, later=clock.later)
    for _ in range(1000):
        flood.warn("accept failed", "accept failed: Too many open files")
    assert [r.getMessage() for r in records.all()] == ["accept failed: Too many open files"]
    clock.advance(1.0)
    assert records[-1].getMessage() == "accept failed: 999 more suppressed in the last 1 s"
    assert len(records) == 2


def test_kinds_are_throttled_apart_and_a_new_second_writes_again(
    records: Records,
) -> None:
    clock = Clock()
    flood = FloodLog(logging.getLogger("test.flood"), clock=lambda: clock.now, later=clock.later)
    flood.warn("a", "a happened")
    flood.warn("b", "b happened")
    flood.warn("a", "a again")
    clock.advance(1.5)
    flood.warn("a", "a in a new second")
    messages = [r.getMessage() for r in records.all()]
    assert messages == ["a happened", "b happened", "a: 1 more suppressed in the last 1 s",
                        "a in a new second"]


def test_accept_errors_on_a_loop_are_throttled_and_carry_no_traceback(
    records: Records,
) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        install_accept_error_handler(loop, FloodLog(logging.getLogger("test.flood")))
        for _ in range(500):
            loop.call_exception_handler({
                "message": "socket.accept() out of system resource",
                "exception": OSError(errno.EMFILE, "Too many open files"),
            })

    asyncio.run(scenario())
    assert len(records) == 1
    assert records[0].exc_info is None
    assert "Too many open files" in records[0].getMessage()


def test_other_loop_errors_still_reach_the_default_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        install_accept_error_handler(loop, FloodLog(logging.getLogger("test.flood")))
        loop.call_exception_handler({"message": "something else", "exception": ValueError("x")})

    asyncio.run(scenario())
    assert any("something else" in r.getMessage() for r in caplog.records)
