"""Task output as append-only files ``logs/<task>/<stream>``, addressed by byte offset.

This is what drones ship to ``POST /v1/worker/log`` and pilots read from
``GET /v1/tasks/{id}/log``; the relay's own log lines are ``relay/logconf.py``'s.

The file's length is the truth: a chunk is appended only when its offset is
the current length; a chunk that lies within what is already stored is
acknowledged (a resend after a lost answer); one beyond it is a gap. Every
append is synced to disk before it is acknowledged, so a relay killed at any
moment (or a power cut) keeps every byte it said it had. Appends run on one
dedicated thread, which serialises them without locks and keeps fsync off the
event loop, and commits them in groups: the appends waiting when the thread
comes round are all written, then one sync round (``fdatasync`` per file, a
directory only when a name was added to it) covers them all, and only then is
each answered. Concurrent chunks (a drone's window, many tasks at once) share
one fsync instead of queueing for one each; a lone chunk pays exactly one.

Three streams per task: ``stdout``, ``stderr`` and ``order`` (which of the
two each run of bytes came from, shared/order.py). The relay reads none of
them: each is a stream of records sealed by the drone (shared/e2e.py) that only
the pilot opens, so nothing is ever written into one (a marker line would break
the records). The per-task output cap counts stdout and stderr, the task's
output, as stored. Past it nothing more is stored, a ``truncated`` file records
the fact (the task view's ``output_truncated``, and ``X-Dragoon-Truncated`` on a
read, with the cap), and later chunks of every stream are acknowledged and
dropped; the pilot, finding the stream ends without its final record, says the
output was cut at the cap. ``order`` is not task output and does not eat into
the cap, but it has a cap of its own of the same size (a task that alternates
one-byte writes makes more order than output): past it, the rest of the order
is acknowledged and dropped and an ``order_truncated`` file says so (the pilot
then takes the bytes it does not cover in arrival order). Both count towards
quotas.

A finished task's log is closed (``close_log``, a ``closed`` file written on the
same thread as the appends, after the check that every byte the drone reported
is here): from then on only a resend of bytes already stored is acknowledged;
anything new is refused with the stream's final size. The route also passes
``closed=True`` for a task whose state is finished by other means (a task the
drone rejected), so the task's state and the log never disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from dragoon.relay.errors import ApiError

TASK_ID: Final = re.compile(r"t-[a-z2-7]{10}")
STREAMS: Final = ("stdout", "stderr", "order")
OUTPUT: Final = ("stdout", "stderr")  # the task's own output, which the output cap counts
TRUNCATED: Final = "truncated"
ORDER_TRUNCATED: Final = "order_truncated"  # the order's own cap was reached
CLOSED: Final = "closed"
BATCH_JOBS: Final = 256  # at most this many appends share one fsync round (memory stays bounded)


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
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._committer = threading.Thread(target=self._commit_loop, name="relay-logs",
                                           daemon=True)
        self._committer.start()

    def close(self) -> None:
        if self._committer.is_alive():
            self._jobs.put(None)
            self._committer.join()

    def path(self, task: str, stream: str) -> Path:
        if not TASK_ID.fullmatch(task) or stream not in STREAMS:
            raise ApiError(422, "invalid", "bad task id or stream")
        return self.root / task / stream

    def size(self, task: str, stream: str) -> int:
        try:
            return self.path(task, stream).stat().st_size
        except FileNotFoundError:
            return 0

    def has_log(self, task: str) -> bool:
        """Whether anything was ever stored for the task: its folder (retention removes it)."""
        return (self.root / task).is_dir()

    def truncated(self, task: str) -> bool:
        return (self.root / task / TRUNCATED).exists()

    def cut(self, task: str, stream: str) -> bool:
        """Whether ``stream`` was cut by a cap: the output's for stdout and stderr, the
        order's own for the order."""
        flag = TRUNCATED if stream in OUTPUT else ORDER_TRUNCATED
        return (self.root / task / flag).exists()

    def sizes(self, task: str) -> dict[str, object]:
        return {**self._held(task), "output_truncated": self.truncated(task)}

    def sizes_of(self, tasks: list[str]) -> dict[str, dict[str, object]]:
        """``sizes`` of each task: what a page of a listing shows."""
        return {task: self.sizes(task) for task in tasks}

    def _held(self, task: str) -> dict[str, int]:
        return {f"{stream}_size": self.size(task, stream) for stream in STREAMS}

    def is_closed(self, task: str) -> bool:
        return (self.root / task / CLOSED).exists()

    async def append(
        self, task: str, stream: str, offset: int, data: bytes, *, closed: bool = False
    ) -> Appended | Gap | Closed:
        path = self.path(task, stream)  # a bad name is refused here, before any queueing
        return await self._submit(_Job(
            lambda commit: self._append(commit, task, stream, offset, data, closed),
            order=(0, str(path), offset)))

    async def _submit(self, job: _Job) -> Any:
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        self._jobs.put(job)
        return await job.future

    def _commit_loop(self) -> None:
        """Group commit: take every job waiting, do them, make them durable at once, answer.

        A job only writes; the one fsync round at the end of its batch covers
        everything the batch wrote, and nothing is answered before it. A job in
        a later batch therefore sees every earlier batch durable (or failed), so
        a resend answered from the file's length never acknowledges a byte that
        a power cut could still take. Appends of one batch are done in offset
        order per stream: chunks a drone sent together, reordered in transit,
        then land instead of bouncing off as gaps.
        """
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < BATCH_JOBS:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            batch.sort(key=lambda job: job.order)
            commit = _Commit()
            outcomes: list[tuple[_Job, Any, BaseException | None]] = []
            for job in batch:
                try:
                    outcomes.append((job, job.work(commit), None))
                except BaseException as exc:  # handed to the waiting request
                    outcomes.append((job, None, exc))
            try:
                commit.sync()
            except OSError as exc:  # nothing of this batch is known durable: no job succeeds
                outcomes = [(job, None, exc) for job, _, _ in outcomes]
            finally:
                commit.release()
            _answer(outcomes)
            if stop:
                return

    def _append(
        self, commit: _Commit, task: str, stream: str, offset: int, data: bytes, closed: bool
    ) -> Appended | Gap | Closed:
        path = self.path(task, stream)
        if self.truncated(task):
            return Appended(offset + len(data))  # past the cap everything is dropped, even now
        if stream not in OUTPUT and self.size(task, stream) >= self.cap:
            return Appended(offset + len(data))  # the order past its own cap, likewise
        if closed or self.is_closed(task):
            size = self.size(task, stream)
            if size:
                commit.open(path)  # the answer says these bytes are held: make sure they are
            if offset + len(data) <= size:
                return Appended(size)  # a resend of stored bytes, after a lost answer
            return Closed(size)
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            commit.dirs.add(self.root)
        # Every answer below reports the file's length: the batch's sync covers it, whether
        # this job wrote the bytes or an earlier process did (before a crash).
        fd = commit.open(path)
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
            return Appended(size + len(fresh))
        if room > 0:  # up to the cap exactly; the pilot finds a record cut there
            _write_all(fd, fresh[:room])
        if stream not in OUTPUT:  # the order's own cap: what is past it is dropped
            commit.touch(path.parent / ORDER_TRUNCATED)
            return Appended(offset + len(data))
        commit.touch(path.parent / TRUNCATED)
        return Appended(offset + len(data), truncated_now=True)

    async def close_log(
        self, task: str, *, stdout_size: int, stderr_size: int, order_size: int = 0
    ) -> dict[str, int] | Incomplete:
        """Close the log if it holds what the drone reported; on the appends' thread, so no
        chunk lands between the check and the close. Returns the final sizes.

        An older drone reports no order size (0): its tasks have no order stream."""
        folder = self.path(task, "stdout").parent
        claimed = {"stdout_size": stdout_size, "stderr_size": stderr_size,
                   "order_size": order_size}
        return await self._submit(_Job(
            lambda commit: self._close_log(commit, task, claimed), order=(1, str(folder), 0)))

    def _close_log(
        self, commit: _Commit, task: str, claimed: dict[str, int]
    ) -> dict[str, int] | Incomplete:
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
            # Not synced: the task's finished state, committed right after this (the route),
            # is what keeps the log closed across a power cut (an append for a finished task
            # passes ``closed=True``); the flag only has to be seen by the next append here,
            # which it is once written. One fsync and a directory fsync off every finish.
            folder.mkdir(mode=0o700, exist_ok=True)
            os.close(os.open(folder / CLOSED, os.O_WRONLY | os.O_CREAT, 0o600))
        return held

    def read(self, task: str, stream: str, offset: int, limit: int) -> bytes:
        try:
            with self.path(task, stream).open("rb") as fh:
                fh.seek(offset)
                return fh.read(limit)
        except FileNotFoundError:
            return b""


@dataclass(eq=False)
class _Job:
    """One append or close on the committer thread; its answer goes to the waiting request."""

    work: Callable[[_Commit], Any]
    order: tuple[int, str, int]
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[Any] | None = None


class _Commit:
    """What one batch touched, made durable in one round: the files, then the directories.

    ``fdatasync`` suffices for a file (it flushes the length an append changed);
    a directory is synced only when a name was added to it, since a new name
    is not durable until its directory is.
    """

    def __init__(self) -> None:
        self.files: dict[Path, int] = {}
        self.dirs: set[Path] = set()

    def open(self, path: Path) -> int:
        fd = self.files.get(path)
        if fd is None:
            created = not path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self.files[path] = fd
            if created:
                self.dirs.add(path.parent)
        return fd

    def touch(self, path: Path) -> None:
        """A flag file (``truncated``), durable once the batch is synced."""
        self.open(path)

    def sync(self) -> None:
        for fd in self.files.values():
            os.fdatasync(fd)
        for folder in self.dirs:
            _fsync_dir(folder)

    def release(self) -> None:
        for fd in self.files.values():
            os.close(fd)
        self.files.clear()


def _answer(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
    """Hand each result to its request's loop, one wake-up per loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
    for outcome in outcomes:
        assert outcome[0].loop is not None
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a loop already closed has nobody waiting
            loop.call_soon_threadsafe(_resolve, answers)


def _resolve(answers: list[tuple[_Job, Any, BaseException | None]]) -> None:
    for job, result, error in answers:
        future = job.future
        if future is None or future.done():  # the request went away meanwhile
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
