"""A task's stdin window in PostgreSQL: relay/stdin.py's ``StdinStore``, with rows for files.

The same window, offsets and answers (relay/stdin.py says what each means), for a relay
whose ``database`` is a PostgreSQL URL. ``stdin_state`` holds ``end``/``acked``/``eof``
per task (the files' ``state.json``) and each accepted chunk is one ``stdin_chunks``
row at its start offset. A chunk's row and the ``end`` that names it commit in one
transaction, so an acknowledged byte is durable and an ``offset=`` resend is
acknowledged, never stored twice. Each change locks the task's state row, so two
replicas serving one task's pilot and drone serialise as the one thread does on files.

All work runs on one thread with its own connection, as the file store's does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import psycopg
from dragoon.relay.errors import ApiError
from dragoon.relay.output import TASK_ID
from dragoon.relay.stdin import (
    Accepted,
    StdinClosed,
    StdinGap,
    StdinRead,
    StdinState,
    WindowFull,
)

T = TypeVar("T")
CONNECT_TIMEOUT: Final = 10  # seconds
READ_STATE: Final = ('SELECT "end", acked, eof, (SELECT count(*) FROM stdin_chunks c'
                     " WHERE c.task = s.task) FROM stdin_state s WHERE task = %s")
LOCK_STATE: Final = READ_STATE + " FOR UPDATE OF s"


class PgStdinStore:
    """The unconsumed stdin of every task that has one, in PostgreSQL."""

    def __init__(self, url: str, window: int) -> None:
        self._url = url
        self.window = window
        self._conn: psycopg.Connection[Any] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-stdin")

    def close(self) -> None:
        self._executor.submit(self._disconnect).result()
        self._executor.shutdown(wait=True)

    @staticmethod
    def check(task: str) -> None:
        if not TASK_ID.fullmatch(task):
            raise ApiError(422, "invalid", "bad task id")

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._in_transaction, func, *args)

    async def state(self, task: str) -> StdinState:
        self.check(task)
        return await self._run(self._state, task)

    async def append(self, task: str, offset: int, data: bytes, eof: bool
                     ) -> Accepted | StdinGap | StdinClosed | WindowFull:
        self.check(task)
        return await self._run(self._append, task, offset, data, eof)

    async def read(self, task: str, offset: int, limit: int) -> StdinRead | StdinGap:
        """Bytes from ``offset``, which acknowledges (and deletes) every byte below it."""
        self.check(task)
        return await self._run(self._read, task, offset, limit)

    async def drop(self, task: str) -> None:
        self.check(task)
        await self._run(self._drop, task)

    def held(self) -> list[str]:
        """The tasks with stdin state here (few: each is a task that is or was running)."""
        return self._executor.submit(self._in_transaction, self._held).result()

    # -- on the store's thread ------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._disconnect()
            self._conn = psycopg.connect(self._url, autocommit=True,
                                          connect_timeout=CONNECT_TIMEOUT,
                                          application_name="dragoon-relay-stdin")
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _in_transaction(self, func: Callable[..., T], *args: Any) -> T:
        conn = self._connection()
        with conn.transaction():
            return func(conn, *args)

    @staticmethod
    def _state(conn: psycopg.Connection[Any], task: str, *, lock: bool = False
               ) -> StdinState:
        row = conn.execute(LOCK_STATE if lock else READ_STATE, (task,)).fetchone()
        if row is None:
            return StdinState()
        return StdinState(int(row[0]), int(row[1]), bool(row[2]), int(row[3]))

    def _append(self, conn: psycopg.Connection[Any], task: str, offset: int, data: bytes,
                eof: bool) -> Accepted | StdinGap | StdinClosed | WindowFull:
        conn.execute("INSERT INTO stdin_state (task) VALUES (%s) ON CONFLICT DO NOTHING",
                     (task,))
        state = self._state(conn, task, lock=True)
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
            conn.execute('INSERT INTO stdin_chunks (task, "offset", data) VALUES (%s, %s, %s)',
                         (task, state.end, fresh))
        closing = eof and offset + len(data) == state.end + len(fresh)
        if fresh or closing:
            state = StdinState(state.end + len(fresh), state.acked, closing, state.chunks)
            conn.execute('UPDATE stdin_state SET "end" = %s, eof = %s WHERE task = %s',
                         (state.end, state.eof, task))
        return Accepted(state.end, state.eof)

    def _read(self, conn: psycopg.Connection[Any], task: str, offset: int, limit: int
              ) -> StdinRead | StdinGap:
        state = self._state(conn, task, lock=True)
        if offset > state.end or offset < state.acked:
            return StdinGap(state.end if offset > state.end else state.acked)
        moved = offset > state.acked
        if moved:
            conn.execute("UPDATE stdin_state SET acked = %s WHERE task = %s", (offset, task))
            # Acknowledged: those bytes are in the drone's spool.
            conn.execute('DELETE FROM stdin_chunks WHERE task = %s'
                         ' AND "offset" + length(data) <= %s', (task, offset))
        want = min(limit, state.end - offset)
        pieces: list[bytes] = []
        if want > 0:
            rows = conn.execute(
                'SELECT "offset", data FROM stdin_chunks WHERE task = %s'
                ' AND "offset" < %s AND "offset" + length(data) > %s ORDER BY "offset"',
                (task, offset + want, offset), binary=True).fetchall()
            position = offset
            for start, chunk in rows:
                if start > position:
                    break
                piece = bytes(chunk[position - start:position - start + want])
                pieces.append(piece)
                position += len(piece)
                want -= len(piece)
                if want <= 0:
                    break
        data = b"".join(pieces)
        return StdinRead(data, offset, state.eof and offset + len(data) == state.end, moved)

    @staticmethod
    def _drop(conn: psycopg.Connection[Any], task: str) -> None:
        conn.execute("DELETE FROM stdin_chunks WHERE task = %s", (task,))
        conn.execute("DELETE FROM stdin_state WHERE task = %s", (task,))

    @staticmethod
    def _held(conn: psycopg.Connection[Any]) -> list[str]:
        return [str(row[0]) for row in conn.execute("SELECT task FROM stdin_state")]
