"""Task output in PostgreSQL: relay/output.py's ``OutputStore``, with rows instead of files.

The same interface and the same answers (offsets, resends, gaps, the caps, the closed
log; relay/output.py says what each means), for a relay whose ``database`` is a
PostgreSQL URL, so that every replica sees every task's output.

Storage (relay/migrations/postgresql/0002_files.sql): one ``log_state`` row per task
holds the three stream lengths and the ``truncated``/``order_truncated``/``closed``
flags (what the files' lengths and flag files are on disk), and each accepted chunk is
one ``log_chunks`` row at its offset. The state row's length is the truth: a chunk's
row and the new length are written in the same transaction, so they never disagree.

Durability: an append is answered only after the transaction that wrote it committed
(the server's fsync of its WAL), so an acknowledged byte survives a crash of the relay
or of the database host. Group commit, as on files: appends run on one dedicated thread
with its own connection; the appends waiting when it comes round are all done in one
transaction and one COMMIT covers them, then each is answered. The rows of a task are
locked (``SELECT ... FOR UPDATE``) in task order, so appends from two replicas to one
stream serialise, and batches on two replicas cannot deadlock.

Reads (``size``, ``read``, the flags) are single statements in autocommit on a small
pool of their own connections: they see only committed appends.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from dragoon.relay.errors import ApiError
from dragoon.relay.output import (
    BATCH_JOBS,
    OUTPUT,
    STREAMS,
    TASK_ID,
    Appended,
    Closed,
    Gap,
    Incomplete,
    _answer,
    _Job,
)
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)
SIZE_COLUMN: Final = {stream: f"{stream}_size" for stream in STREAMS}
CONNECT_TIMEOUT: Final = 10  # seconds: a database that does not answer fails the batch, soon
STATE_COLUMNS: Final = ("stdout_size, stderr_size, order_size, truncated, order_truncated,"
                        " closed")


@dataclass
class _State:
    """A task's ``log_state`` row as read under its lock."""

    sizes: dict[str, int]
    truncated: bool
    order_truncated: bool
    closed: bool

    @classmethod
    def of(cls, row: tuple[Any, ...] | None) -> _State | None:
        if row is None:
            return None
        return cls(dict(zip(STREAMS, (int(row[0]), int(row[1]), int(row[2])), strict=True)),
                   bool(row[3]), bool(row[4]), bool(row[5]))


class PgOutputStore:
    """stdout, stderr and order of every task, in PostgreSQL; see relay/output.py."""

    def __init__(self, url: str, cap: int, *, pool_size: int = 4) -> None:
        self._url = url
        self.cap = cap
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size,
                                    kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT,
                                            "application_name": "dragoon-relay-logs-read"},
                                    open=True, name="relay-logs-read", timeout=CONNECT_TIMEOUT)
        self._writer: psycopg.Connection[Any] | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._committer = threading.Thread(target=self._commit_loop, name="relay-logs",
                                           daemon=True)
        self._committer.start()

    def close(self) -> None:
        if self._committer.is_alive():
            self._jobs.put(None)
            self._committer.join()
        self._pool.close()

    # -- reads, on the caller's thread --------------------------------------------------

    @staticmethod
    def check(task: str, stream: str) -> None:
        if not TASK_ID.fullmatch(task) or stream not in STREAMS:
            raise ApiError(422, "invalid", "bad task id or stream")

    def _state(self, task: str) -> _State | None:
        with self._pool.connection() as conn:
            return _State.of(conn.execute(
                f"SELECT {STATE_COLUMNS} FROM log_state WHERE task = %s",  # noqa: S608
                (task,)).fetchone())

    def size(self, task: str, stream: str) -> int:
        self.check(task, stream)
        state = self._state(task)
        return 0 if state is None else state.sizes[stream]

    def has_log(self, task: str) -> bool:
        """Whether anything was ever stored for the task (the files' log folder)."""
        return self._state(task) is not None

    def truncated(self, task: str) -> bool:
        state = self._state(task)
        return state is not None and state.truncated

    def cut(self, task: str, stream: str) -> bool:
        state = self._state(task)
        if state is None:
            return False
        return state.truncated if stream in OUTPUT else state.order_truncated

    def sizes(self, task: str) -> dict[str, object]:
        return _sizes(self._state(task))

    def sizes_of(self, tasks: list[str]) -> dict[str, dict[str, object]]:
        """``sizes`` of each task in one statement: a listing's page of up to 1,000 tasks
        costs one round trip, not one per task."""
        found: dict[str, _State] = {}
        if tasks:
            with self._pool.connection() as conn:
                for row in conn.execute(
                        f"SELECT task, {STATE_COLUMNS} FROM log_state"  # noqa: S608
                        " WHERE task = ANY(%s)", (list(tasks),)):
                    state = _State.of(tuple(row[1:]))
                    assert state is not None
                    found[str(row[0])] = state
        return {task: _sizes(found.get(task)) for task in tasks}

    def is_closed(self, task: str) -> bool:
        state = self._state(task)
        return state is not None and state.closed

    def read(self, task: str, stream: str, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes from ``offset``: the chunk that holds ``offset`` and those
        after it up to the end asked for, in one statement (one snapshot)."""
        self.check(task, stream)
        if limit <= 0:
            return b""
        end = offset + limit
        with self._pool.connection() as conn:
            rows = conn.execute(
                'SELECT "offset", data FROM log_chunks WHERE task = %(t)s AND stream = %(s)s'
                ' AND "offset" < %(end)s AND "offset" >= COALESCE((SELECT max("offset")'
                ' FROM log_chunks WHERE task = %(t)s AND stream = %(s)s'
                ' AND "offset" <= %(start)s), 0) ORDER BY "offset"',
                {"t": task, "s": stream, "start": offset, "end": end}, binary=True).fetchall()
        pieces: list[bytes] = []
        for start, data in rows:
            lo = max(offset - start, 0)
            hi = min(end - start, len(data))
            if hi > lo:
                pieces.append(bytes(data[lo:hi]))
        return b"".join(pieces)

    # -- writes, on the committer thread ------------------------------------------------

    async def append(
        self, task: str, stream: str, offset: int, data: bytes, *, closed: bool = False
    ) -> Appended | Gap | Closed:
        self.check(task, stream)  # a bad name is refused here, before any queueing
        return await self._submit(_Job(
            lambda conn: self._append(conn, task, stream, offset, data, closed),
            order=(0, f"{task}/{stream}", offset)))

    async def close_log(
        self, task: str, *, stdout_size: int, stderr_size: int, order_size: int = 0
    ) -> dict[str, int] | Incomplete:
        """Close the log if it holds what the drone reported (relay/output.py)."""
        self.check(task, "stdout")
        claimed = {"stdout_size": stdout_size, "stderr_size": stderr_size,
                   "order_size": order_size}
        return await self._submit(_Job(lambda conn: self._close_log(conn, task, claimed),
                                       order=(0, f"{task}/~close", 0)))

    async def _submit(self, job: _Job) -> Any:
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        self._jobs.put(job)
        return await job.future

    def _connection(self) -> psycopg.Connection[Any]:
        """The committer's own connection, made again after it broke (a database restart)."""
        if self._writer is None or self._writer.closed or self._writer.broken:
            if self._writer is not None:
                self._writer.close()
            self._writer = psycopg.connect(self._url, autocommit=True,
                                          connect_timeout=CONNECT_TIMEOUT,
                                          application_name="dragoon-relay-logs-write")
        return self._writer

    def _commit_loop(self) -> None:
        """Group commit: take every job waiting, do them in one transaction, answer.

        Sorted by task, then stream and offset (a task's close after its appends): chunks
        a drone sent together, reordered in transit, land in order, and every batch takes
        its row locks in the same order. When a batch fails (a lost connection, a deadlock
        with another replica), it is rolled back and each job is tried alone, so one bad
        job fails only its own request.
        """
        try:
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
                _answer(self._run_batch(batch))
                if stop:
                    return
        finally:
            if self._writer is not None:
                self._writer.close()

    def _run_batch(self, batch: list[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        """The batch in one transaction; on a failure, again on a fresh connection if the
        old one broke (a restarted server, a dropped link), then each job alone.

        Trying again is safe even when the failure hid a COMMIT that went through: every
        job is idempotent (an append at an offset already held is acknowledged, a second
        close changes nothing), so no byte is stored twice.
        """
        try:
            return self._transaction(batch)
        except BaseException as exc:
            broken = self._writer is None or self._writer.broken or self._writer.closed
            log.warning("a batch of %d log appends failed (%s)%s", len(batch),
                        type(exc).__name__, "; reconnecting" if broken else "")
            if not broken and len(batch) == 1:
                return [(batch[0], None, exc)]
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        for job in batch:
            try:
                outcomes.extend(self._transaction([job]))
            except BaseException as exc:
                outcomes.append((job, None, exc))
        return outcomes

    def _transaction(self, batch: list[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        """The jobs' work in one transaction; answers only once it committed."""
        conn = self._connection()
        with conn.transaction():
            results = [(job, job.work(conn), None) for job in batch]
        return results  # type: ignore[return-value]

    def _locked(self, conn: psycopg.Connection[Any], task: str, create: bool) -> _State | None:
        sql = f"SELECT {STATE_COLUMNS} FROM log_state WHERE task = %s FOR UPDATE"  # noqa: S608
        state = _State.of(conn.execute(sql, (task,)).fetchone())
        if state is None and create:
            conn.execute("INSERT INTO log_state (task) VALUES (%s) ON CONFLICT DO NOTHING",
                         (task,))
            state = _State.of(conn.execute(sql, (task,)).fetchone())
        return state

    def _append(
        self, conn: psycopg.Connection[Any], task: str, stream: str, offset: int, data: bytes,
        closed: bool,
    ) -> Appended | Gap | Closed:
        state = self._locked(conn, task, create=False)
        if state is not None and state.truncated:
            return Appended(offset + len(data))  # past the cap everything is dropped, even now
        if stream not in OUTPUT and state is not None and state.sizes[stream] >= self.cap:
            return Appended(offset + len(data))  # the order past its own cap, likewise
        if closed or (state is not None and state.closed):
            size = 0 if state is None else state.sizes[stream]
            if offset + len(data) <= size:
                return Appended(size)  # a resend of stored bytes, after a lost answer
            return Closed(size)
        if state is None:
            state = self._locked(conn, task, create=True)
            assert state is not None
        size = state.sizes[stream]
        if offset > size:
            return Gap(size)
        fresh = data[size - offset:]
        if not fresh:
            return Appended(size)  # a duplicate: every byte is already here
        if stream in OUTPUT:
            other = "stderr" if stream == "stdout" else "stdout"
            room = self.cap - size - state.sizes[other]
        else:
            room = self.cap - size
        if len(fresh) <= room:
            self._write(conn, task, stream, size, fresh)
            return Appended(size + len(fresh))
        if room > 0:  # up to the cap exactly; the pilot finds a record cut there
            self._write(conn, task, stream, size, fresh[:room])
        if stream not in OUTPUT:  # the order's own cap: what is past it is dropped
            conn.execute("UPDATE log_state SET order_truncated = TRUE WHERE task = %s", (task,))
            return Appended(offset + len(data))
        conn.execute("UPDATE log_state SET truncated = TRUE WHERE task = %s", (task,))
        return Appended(offset + len(data), truncated_now=True)

    @staticmethod
    def _write(conn: psycopg.Connection[Any], task: str, stream: str, at: int,
               data: bytes) -> None:
        conn.execute('INSERT INTO log_chunks (task, stream, "offset", data)'
                     " VALUES (%s, %s, %s, %s)", (task, stream, at, data))
        conn.execute(f"UPDATE log_state SET {SIZE_COLUMN[stream]} = %s"  # noqa: S608
                     " WHERE task = %s", (at + len(data), task))

    def _close_log(
        self, conn: psycopg.Connection[Any], task: str, claimed: dict[str, int]
    ) -> dict[str, int] | Incomplete:
        state = self._locked(conn, task, create=False)
        held = {f"{stream}_size": 0 if state is None else state.sizes[stream]
                for stream in STREAMS}
        order_cut = min(claimed["order_size"], self.cap)
        if not (state is not None and state.truncated) and (
            claimed["stdout_size"] > held["stdout_size"]
            or claimed["stderr_size"] > held["stderr_size"] or order_cut > held["order_size"]
        ):
            return Incomplete(**held)
        if state is None or not state.closed:
            # Committed before the route records the finish, as the files' flag is written.
            conn.execute("INSERT INTO log_state (task, closed) VALUES (%s, TRUE)"
                         " ON CONFLICT (task) DO UPDATE SET closed = TRUE", (task,))
        return held


def _sizes(state: _State | None) -> dict[str, object]:
    """A task view's sizes and ``output_truncated`` from its state row (none: nothing yet)."""
    held = {f"{s}_size": 0 if state is None else state.sizes[s] for s in STREAMS}
    return {**held, "output_truncated": state is not None and state.truncated}
