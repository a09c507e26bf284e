"""A task's stdin on its way from the pilot to the drone: a bounded window, addressed by offset.

The pilot posts chunks at their offset (``POST /v1/tasks/{id}/stdin``), the
drone reads from an offset (``GET /v1/worker/tasks/{id}/stdin``), and the
drone's offset acknowledges every byte below it: those bytes are in the task's
spool on the drone, so the relay deletes them. The relay therefore never holds
more than the window of bytes the drone has not taken yet (``unconsumed``),
plus one chunk: a chunk is accepted only while ``end - acked`` is under the
window, and the pilot's upload waits (the route holds it, then answers
``window_full``) until the drone has taken more. The drone in turn takes only
as fast as the task reads, so back-pressure runs from the task to the pilot's
``read(2)``.

Storage, under ``stdin/<task>/``: one file per accepted chunk, named by its
start offset (20 digits), and ``state.json`` ``{"end", "acked", "eof"}``.
A chunk file is written and fsynced before ``state.json`` names its bytes, so
a relay killed at any moment keeps every byte it acknowledged, and an
``offset=`` resend after a lost answer is acknowledged, never stored twice
(the same rules as relay/output.py). All changes run on one thread, which
serialises them without locks and keeps fsync off the event loop.

Once the pilot's eof is recorded, nothing more is accepted; when the task
finishes its folder is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from dragoon.relay.errors import ApiError, not_found
from dragoon.relay.output import TASK_ID
from dragoon.relay.tasks import FINISHED, own_task, row_of, task_finished

T = TypeVar("T")
STATE: Final = "state.json"
# Tiny chunks (a pilot typing at a terminal) must not become a million files: past this many
# unconsumed chunks the window counts as full too.
MAX_PENDING_CHUNKS: Final = 1024


@dataclass(frozen=True)
class StdinState:
    """Where a task's stdin stands: bytes ``[acked, end)`` are held, ``eof`` once the pilot
    closed it, ``chunks`` files hold them."""

    end: int = 0
    acked: int = 0
    eof: bool = False
    chunks: int = 0

    def has_room(self, window: int) -> bool:
        return self.end - self.acked < window and self.chunks < MAX_PENDING_CHUNKS


@dataclass(frozen=True)
class Accepted:
    next_offset: int
    eof: bool


@dataclass(frozen=True)
class StdinGap:
    """An offset past what the relay holds (``expected`` is its end), or, for the drone, below
    what it already acknowledged (those bytes are gone)."""

    expected: int


@dataclass(frozen=True)
class StdinClosed:
    """New bytes after the pilot's eof: refused; ``size`` is the whole stdin."""

    size: int


@dataclass(frozen=True)
class WindowFull:
    """The drone has not taken enough yet: retry at ``expected`` (the relay's end) later."""

    expected: int


@dataclass(frozen=True)
class StdinRead:
    data: bytes
    offset: int
    eof: bool
    acked_moved: bool


class StdinStore:
    """The unconsumed stdin of every task that has one."""

    def __init__(self, root: Path, window: int) -> None:
        self.root = root
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.window = window
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-stdin")

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def folder(self, task: str) -> Path:
        if not TASK_ID.fullmatch(task):
            raise ApiError(422, "invalid", "bad task id")
        return self.root / task

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def state(self, task: str) -> StdinState:
        return await self._run(self._state, task)

    async def append(self, task: str, offset: int, data: bytes, eof: bool
                     ) -> Accepted | StdinGap | StdinClosed | WindowFull:
        return await self._run(self._append, task, offset, data, eof)

    async def read(self, task: str, offset: int, limit: int) -> StdinRead | StdinGap:
        """Bytes from ``offset``, which acknowledges (and deletes) every byte below it."""
        return await self._run(self._read, task, offset, limit)

    async def drop(self, task: str) -> None:
        await self._run(self._drop, task)

    def held(self) -> list[str]:
        """The tasks with a stdin folder here (few: each is a task that is or was running)."""
        try:
            return [name for name in os.listdir(self.root) if TASK_ID.fullmatch(name)]
        except FileNotFoundError:
            return []

    # -- on the store's thread ------------------------------------------------------------

    def _state(self, task: str) -> StdinState:
        folder = self.folder(task)
        try:
            raw = json.loads((folder / STATE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return StdinState()
        chunks = sum(1 for name in _chunk_names(folder))
        return StdinState(int(raw["end"]), int(raw["acked"]), bool(raw["eof"]), chunks)

    def _save(self, task: str, state: StdinState, *, durable: bool) -> None:
        folder = self.folder(task)
        tmp = folder / f"{STATE}.tmp"
        tmp.write_text(json.dumps({"end": state.end, "acked": state.acked, "eof": state.eof}),
                       encoding="utf-8")
        if durable:
            _fsync_path(tmp)
        os.replace(tmp, folder / STATE)
        if durable:
            _fsync_path(folder)

    def _append(self, task: str, offset: int, data: bytes, eof: bool
                ) -> Accepted | StdinGap | StdinClosed | WindowFull:
        folder = self.folder(task)
        if not folder.exists():
            folder.mkdir(mode=0o700)
            _fsync_path(self.root)
        state = self._state(task)
        if offset > state.end:
            return StdinGap(state.end)
        fresh = data[state.end - offset:]
        if state.eof:
            if fresh:
                return StdinClosed(state.end)
            return Accepted(state.end, True)  # a resend, after a lost answer
        if fresh and not state.has_room(self.window):
            return WindowFull(state.end)
        if fresh:
            name = folder / f"{state.end:020d}"
            tmp = folder / f"{state.end:020d}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, fresh)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name)
        closing = eof and offset + len(data) == state.end + len(fresh)
        if fresh or closing:
            state = StdinState(state.end + len(fresh), state.acked, closing, state.chunks)
            self._save(task, state, durable=True)
        return Accepted(state.end, state.eof)

    def _read(self, task: str, offset: int, limit: int) -> StdinRead | StdinGap:
        folder = self.folder(task)
        state = self._state(task)
        if offset > state.end or offset < state.acked:
            return StdinGap(state.end if offset > state.end else state.acked)
        moved = offset > state.acked
        if moved:
            state = StdinState(state.end, offset, state.eof, state.chunks)
            # A lost ack only makes the drone's next offset acknowledge the bytes again.
            self._save(task, state, durable=False)
        pieces: list[bytes] = []
        position = offset
        # Never past what state.json names: a chunk file a crash left unnamed is not stored.
        want = min(limit, state.end - offset)
        for name in _chunk_names(folder):
            start = int(name)
            path = folder / name
            size = path.stat().st_size
            if start + size <= offset:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # acknowledged: it is in the drone's spool
                continue
            if want <= 0 or start > position:
                continue
            with path.open("rb") as handle:
                handle.seek(position - start)
                piece = handle.read(want)
            pieces.append(piece)
            position += len(piece)
            want -= len(piece)
        data = b"".join(pieces)
        return StdinRead(data, offset, state.eof and offset + len(data) == state.end, moved)

    def _drop(self, task: str) -> None:
        shutil.rmtree(self.folder(task), ignore_errors=True)


def _chunk_names(folder: Path) -> list[str]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if len(name) == 20 and name.isdigit())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- who may feed and read a task's stdin (on the database thread) ---------------------------


def _reads_stdin(row: sqlite3.Row) -> bool:
    return json.loads(row["spec"]).get("stdin") is True


def pilot_task(conn: sqlite3.Connection, pilot: str, task_id: str) -> sqlite3.Row:
    """The task whose stdin ``pilot`` may feed: theirs, reading stdin, not finished.

    Only the pilot who submitted the task feeds it: its stdin is that pilot's
    stream, as a terminal's input is its user's.
    """
    row = row_of(conn, task_id)
    if row is None:
        raise not_found("task")
    if row["pilot"] != pilot:
        raise ApiError(403, "forbidden", f"task {task_id} is another pilot's; only the pilot "
                                         "who submitted a task feeds its stdin")
    if not _reads_stdin(row):
        raise ApiError(409, "no_stdin", f"task {task_id} was submitted without stdin "
                                        "(its spec has no \"stdin\": true)")
    if row["state"] in FINISHED:
        raise task_finished(row, "it reads no more stdin")
    return row


def ended(conn: sqlite3.Connection, tasks: list[str]) -> list[str]:
    """Those of ``tasks`` that will read no stdin again: finished, or gone from the database.

    A task finished through its drone has its stdin dropped at once; this is for the others
    (cancelled while queued, expired, ended by a replacement), which the sweeper cleans up.
    """
    out: list[str] = []
    for task in tasks:
        row = row_of(conn, task)
        if row is None or row["state"] in FINISHED:
            out.append(task)
    return out


def drone_task(conn: sqlite3.Connection, drone: str, task_id: str) -> sqlite3.Row:
    """The task whose stdin this drone may read: handed to it, reading stdin, not finished."""
    row = own_task(conn, drone, task_id)
    if not _reads_stdin(row):
        raise ApiError(409, "no_stdin", f"task {task_id} was submitted without stdin")
    if row["state"] in FINISHED:
        raise task_finished(row, "its stdin is closed")
    return row
