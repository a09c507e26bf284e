"""Task output as append-only files ``logs/<task>/<stream>``, addressed by byte offset.

This is what drones ship to ``POST /v1/worker/log`` and pilots read from
``GET /v1/tasks/{id}/log``; the relay's own log lines are ``relay/logconf.py``'s.

The file's length is the truth: a chunk is appended only when its offset is
the current length; a chunk that lies within what is already stored is
acknowledged (a resend after a lost answer); one beyond it is a gap. Every
append is fsynced before it is acknowledged, so a relay killed at any moment
keeps every byte it said it had. Appends run on one dedicated thread, which
serialises them without locks and keeps fsync off the event loop.

Three streams per task: ``stdout``, ``stderr`` and ``order`` (which of the
two each run of bytes came from, shared/order.py). The per-task output cap
counts stdout and stderr, the task's output. Past it a marker line is
written, a ``truncated`` file records the fact, and later chunks of every
stream are acknowledged and dropped. ``order`` is not task output and does not
eat into the cap, but it has a cap of its own of the same size (a task that
alternates one-byte writes makes more order than output): past it, the rest of
the order is acknowledged and dropped, no marker, since a reader already takes
bytes the order does not cover in arrival order. Both count towards quotas.

A finished task's log is closed (``close_log``, a ``closed`` file written on the
same thread as the appends, after the check that every byte the drone reported
is here): from then on only a resend of bytes already stored is acknowledged;
anything new is refused with the stream's final size. The route also passes
``closed=True`` for a task whose state is finished by other means (a task the
drone rejected), so the task's state and the log never disagree.
"""

from __future__ import annotations

import asyncio
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dragoon.relay.errors import ApiError

TASK_ID: Final = re.compile(r"t-[a-z2-7]{10}")
STREAMS: Final = ("stdout", "stderr", "order")
OUTPUT: Final = ("stdout", "stderr")  # the task's own output, which the output cap counts
TRUNCATED: Final = "truncated"
CLOSED: Final = "closed"


def marker(cap: int) -> bytes:
    return f"\n[dragoon: output cap of {cap} bytes reached; the rest was dropped]\n".encode()


@dataclass(frozen=True)
class Appended:
    next_offset: int
    truncated_now: bool = False


@dataclass(frozen=True)
class Gap:
    expected: int


@dataclass(frozen=True)
class Closed:
    """New bytes for a closed log: refused; ``size`` is what the stream holds for good."""

    size: int


@dataclass(frozen=True)
class Incomplete:
    """A finish claimed more output than is here: the log stays open for the rest."""

    stdout_size: int
    stderr_size: int
    order_size: int


class OutputStore:
    """stdout, stderr and order of every task, with the sizes a task view reports."""

    def __init__(self, root: Path, cap: int) -> None:
        self.root = root
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.cap = cap
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-logs")

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def path(self, task: str, stream: str) -> Path:
        if not TASK_ID.fullmatch(task) or stream not in STREAMS:
            raise ApiError(422, "invalid", "bad task id or stream")
        return self.root / task / stream

    def size(self, task: str, stream: str) -> int:
        try:
            return self.path(task, stream).stat().st_size
        except FileNotFoundError:
            return 0

    def truncated(self, task: str) -> bool:
        return (self.root / task / TRUNCATED).exists()

    def sizes(self, task: str) -> dict[str, object]:
        return {**self._held(task), "output_truncated": self.truncated(task)}

    def _held(self, task: str) -> dict[str, int]:
        return {f"{stream}_size": self.size(task, stream) for stream in STREAMS}

    def is_closed(self, task: str) -> bool:
        return (self.root / task / CLOSED).exists()

    async def append(
        self, task: str, stream: str, offset: int, data: bytes, *, closed: bool = False
    ) -> Appended | Gap | Closed:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._append, task, stream, offset, data, closed
        )

    def _append(
        self, task: str, stream: str, offset: int, data: bytes, closed: bool
    ) -> Appended | Gap | Closed:
        path = self.path(task, stream)
        if self.truncated(task):
            return Appended(offset + len(data))  # past the cap everything is dropped, even now
        if stream not in OUTPUT and self.size(task, stream) >= self.cap:
            return Appended(offset + len(data))  # the order past its own cap, likewise
        if closed or self.is_closed(task):
            size = self.size(task, stream)
            if offset + len(data) <= size:
                return Appended(size)  # a resend of stored bytes, after a lost answer
            return Closed(size)
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            _fsync_dir(self.root)
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if created:  # the new name must be durable before any byte in it is acknowledged
            _fsync_dir(path.parent)
        try:
            size = os.fstat(fd).st_size
            if offset > size:
                return Gap(size)
            fresh = data[size - offset:]
            if not fresh:
                return Appended(size)  # a duplicate: every byte is already here
            if stream in OUTPUT:
                other = "stderr" if stream == "stdout" else "stdout"
                room = self.cap - size - self.size(task, other)
            else:
                room = self.cap - size
            if len(fresh) <= room:
                _write_all(fd, fresh)
                os.fsync(fd)
                return Appended(size + len(fresh))
            if stream not in OUTPUT:  # the order's own cap: what is past it is dropped
                if room > 0:
                    _write_all(fd, fresh[:room])
                    os.fsync(fd)
                return Appended(offset + len(data))
            _write_all(fd, fresh[:max(room, 0)] + marker(self.cap))
            os.fsync(fd)
        finally:
            os.close(fd)
        _touch_durably(path.parent / TRUNCATED)
        return Appended(offset + len(data), truncated_now=True)

    async def close_log(
        self, task: str, *, stdout_size: int, stderr_size: int, order_size: int = 0
    ) -> dict[str, int] | Incomplete:
        """Close the log if it holds what the drone reported; on the appends' thread, so no
        chunk lands between the check and the close. Returns the final sizes.

        An older drone reports no order size (0): its tasks have no order stream."""
        loop = asyncio.get_running_loop()
        claimed = {"stdout_size": stdout_size, "stderr_size": stderr_size,
                   "order_size": order_size}
        return await loop.run_in_executor(self._executor, self._close_log, task, claimed)

    def _close_log(self, task: str, claimed: dict[str, int]) -> dict[str, int] | Incomplete:
        folder = self.path(task, "stdout").parent
        held = self._held(task)
        # The order's own cap drops its tail without a flag: a claim past it is not missing.
        order_cut = min(claimed["order_size"], self.cap)
        if not self.truncated(task) and (
            claimed["stdout_size"] > held["stdout_size"]
            or claimed["stderr_size"] > held["stderr_size"] or order_cut > held["order_size"]
        ):
            return Incomplete(**held)
        if not (folder / CLOSED).exists():
            if not folder.exists():
                folder.mkdir(mode=0o700, exist_ok=True)
                _fsync_dir(self.root)
            _touch_durably(folder / CLOSED)
        return held

    def read(self, task: str, stream: str, offset: int, limit: int) -> bytes:
        try:
            with self.path(task, stream).open("rb") as fh:
                fh.seek(offset)
                return fh.read(limit)
        except FileNotFoundError:
            return b""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _touch_durably(path: Path) -> None:
    """A flag file (``truncated``, ``closed``) that survives a crash once this returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
