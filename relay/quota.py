"""Disk quotas: the bytes each drone has stored (logs, artifacts, fetched files), and a refusal.

Usage is counted as it is stored, never by walking the disk: the ``storage``
table holds bytes per drone and ``log_sizes`` the length of every log the
relay has acknowledged. An artifact or a fetched file is charged in the same
transaction that records it (relay/artifacts.py, relay/fetches.py); a log in
a short transaction right after its append was made durable, from the file's
new length, so a count that missed a chunk (a crash in between) heals itself
at the next append. Retention (relay/retention.py) gives the bytes back.

A quota is checked before bytes are accepted: over it, an output append, an
artifact upload or a fetch result is answered 507 ``quota_exceeded`` with the
numbers. The drone treats a 5xx as "retry later" and keeps its spool, so no
byte is lost, only delayed until room is made (``dragoon relay gc``, or a
larger quota). Uploads already under way finish, so usage can pass a quota by
what was in flight at that moment.

Shared content counts once per reference: two tasks with the same artifact
are charged twice, while the disk holds it once, so the counts are an upper
bound of the disk used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from dragoon.relay.db import Connection, Row, relaxed_durability, transaction
from dragoon.relay.errors import ApiError, not_found
from dragoon.relay.output import STREAMS, TASK_ID, Appended, Closed, Gap
from dragoon.relay.units import format_size

if TYPE_CHECKING:
    from dragoon.relay.config import RelayConfig
    from dragoon.relay.context import Relay

CODE: Final = "quota_exceeded"
STATUS: Final = 507  # Insufficient Storage
BACKFILL_FLAG: Final = "logs_backfill_pending"
BACKFILL_BATCH: Final = 200

#: ``call(fn, *args)`` runs ``fn(conn, *args)`` where the connection lives (Database.call).
DbCall = Callable[..., Any]


@dataclass(frozen=True)
class Limits:
    drone: int | None  # bytes per drone; None: no limit
    total: int | None  # bytes in all

    @classmethod
    def of(cls, config: RelayConfig) -> Limits:
        return cls(config.drone_quota_bytes, config.storage_quota_bytes)

    @property
    def active(self) -> bool:
        return self.drone is not None or self.total is not None


def exceeded(detail: str, *, scope: str, used: int, quota: int) -> ApiError:
    return ApiError(STATUS, CODE, detail, scope=scope, used=used, quota=quota)


def used(conn: Connection, drone: str) -> int:
    row = conn.execute("SELECT bytes FROM storage WHERE drone = ?", (drone,)).fetchone()
    return 0 if row is None else int(row[0])


def used_total(conn: Connection) -> int:
    return int(conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM storage").fetchone()[0])


def check(conn: Connection, limits: Limits, drone: str, incoming: int) -> None:
    """Raise 507 when ``incoming`` more bytes would put the drone, or the relay, over quota."""
    if incoming <= 0 or not limits.active:
        return
    if limits.drone is not None:
        have = used(conn, drone)
        if have + incoming > limits.drone:
            raise exceeded(
                f"drone {drone} uses {format_size(have)} of {format_size(limits.drone)}",
                scope="drone", used=have, quota=limits.drone,
            )
    if limits.total is not None:
        have = used_total(conn)
        if have + incoming > limits.total:
            raise exceeded(
                f"the relay stores {format_size(have)} of {format_size(limits.total)}"
                " (storage_quota)", scope="relay", used=have, quota=limits.total,
            )


def charge(conn: Connection, drone: str, delta: int) -> None:
    """Add (or with a negative delta, give back) bytes; inside the caller's transaction."""
    if delta == 0:
        return
    conn.execute(
        "INSERT INTO storage (drone, bytes) VALUES (?, ?) ON CONFLICT (drone)"
        " DO UPDATE SET bytes = CASE WHEN storage.bytes + ? > 0 THEN storage.bytes + ?"
        " ELSE 0 END", (drone, max(delta, 0), delta, delta),
    )


@contextlib.contextmanager
def _relaxed(conn: Connection) -> Iterator[None]:
    """A transaction that skips its own fsync (SQLite: WAL, synchronous=NORMAL;
    PostgreSQL: synchronous_commit off).

    It survives a crash of the relay, and the next durable commit syncs it;
    only a power cut can lose it, and then the next append recounts the log
    from its length. Output appends are already fsynced twice; a third fsync
    per chunk for bookkeeping would cost more than it protects.
    """
    with relaxed_durability(conn), transaction(conn):
        yield


def record_log(conn: Connection, drone: str, task: str, stream: str, size: int) -> None:
    """The log now holds ``size`` bytes: remember it and charge what is new."""
    row = conn.execute(
        "SELECT size FROM log_sizes WHERE task = ? AND stream = ?", (task, stream)
    ).fetchone()
    if row is not None and size <= row[0]:
        return  # a resend, or an answer that overtook a later one: nothing new
    if row is None and conn.execute(
        "SELECT 1 FROM tasks WHERE id = ? AND pruned_at IS NOT NULL", (task,)
    ).fetchone() is not None:
        return  # a late chunk raced the pruning: its folder goes at the next pass
    with _relaxed(conn):
        row = conn.execute(
            "SELECT size FROM log_sizes WHERE task = ? AND stream = ?", (task, stream)
        ).fetchone()
        old = 0 if row is None else int(row[0])
        if size <= old and row is not None:
            return
        conn.execute(
            "INSERT INTO log_sizes (task, stream, size) VALUES (?, ?, ?)"
            " ON CONFLICT (task, stream) DO UPDATE SET size = excluded.size",
            (task, stream, size),
        )
        charge(conn, drone, size - old)


def check_append(
    conn: Connection, limits: Limits, drone: str, task: str, incoming: int
) -> None:
    row = conn.execute("SELECT pruned_at FROM tasks WHERE id = ?", (task,)).fetchone()
    if row is not None and row["pruned_at"] is not None:
        # 404 tells the drone the output has nowhere to go; it stops shipping it.
        raise ApiError(404, "not_found", "the task's output was removed by the relay's retention")
    check(conn, limits, drone, incoming)


async def append_log(
    relay: Relay, drone: str, task: str, stream: str, offset: int, data: bytes,
) -> tuple[Row, Appended | Gap | Closed]:
    """``OutputStore.append`` for the drone's own task, with the quota checked before and
    the new length counted after; the task's row and the store's answer.

    The task is looked up (``own_task``: 404 unless it was handed to this drone) and,
    when needed, the quota checked in one call on the database thread: one hop, not two.
    A closed log (its task finished) takes nothing new whatever the quota: the store
    answers that, so no quota check is made for it; a task whose state is finished is
    appended with ``closed=True``, so the task's state and the log never disagree.
    """
    if not TASK_ID.fullmatch(task):
        raise not_found("task for this drone")  # own_task's answer: no such task exists
    store = relay.output  # the relay's output store: the one line to follow if it is renamed
    held = store.size(task, stream)
    fresh = offset + len(data) - held
    limits = Limits.of(relay.config)
    # Without a quota the quota is asked only when the task has no log folder: it may
    # have been pruned (pruning removes the folder), else the check would cost every chunk.
    ask = (fresh > 0 and (limits.active or not store.has_log(task))
           and not store.truncated(task))
    # A gap (offset past what is held) stores nothing: only whether the task still has
    # an output is asked then.
    incoming = (fresh if offset <= held else 0) if ask else None
    row, finished = await relay.db.run(admit_append, limits, drone, task, incoming)
    result = await store.append(task, stream, offset, data, closed=finished)
    if isinstance(result, Appended):
        await relay.log_sizes.record(drone, task, stream, store.size(task, stream))
    return row, result


def admit_append(
    conn: Connection, limits: Limits, drone: str, task: str, incoming: int | None
) -> tuple[Row, bool]:
    """The drone's own task (``own_task``) and whether it is finished, with the quota
    checked for ``incoming`` new bytes unless None (no check asked for) or the task is
    finished (its closed log takes nothing new)."""
    from dragoon.relay.tasks import FINISHED, own_task  # tasks → enroll → fetches → quota

    row = own_task(conn, drone, task)
    finished = row["state"] in FINISHED
    if incoming is not None and not finished:
        check_append(conn, limits, drone, task, incoming)
    return row, finished


class LogSizes:
    """``record_log`` for concurrent appends in one database call, the answers after it.

    The appends that a group commit answered together (relay/output.py) would
    otherwise queue on the database thread for one transaction each. While one
    round is being written, new sizes collect for the next, keeping only the
    largest per log; every caller waits for the round that holds its size, so
    usage is counted before the chunk is acknowledged, as before.
    """

    def __init__(self, call: Callable[..., Awaitable[Any]]) -> None:
        self._call = call  # Database.run
        self._pending: dict[tuple[str, str], tuple[str, int]] = {}
        self._next: asyncio.Future[None] | None = None
        self._writing = False

    async def record(self, drone: str, task: str, stream: str, size: int) -> None:
        held = self._pending.get((task, stream))
        if held is None or size > held[1]:
            self._pending[(task, stream)] = (drone, size)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        round_ = self._next
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._write())
        await asyncio.shield(round_)

    async def _write(self) -> None:
        try:
            while self._next is not None:
                round_, sizes = self._next, self._pending
                self._next, self._pending = None, {}
                try:
                    await self._call(record_logs, sizes)
                except Exception as exc:  # every caller of this round answers with it
                    round_.set_exception(exc)
                else:
                    round_.set_result(None)
        finally:
            self._writing = False


def record_logs(conn: Connection, sizes: dict[tuple[str, str], tuple[str, int]]) -> None:
    for (task, stream), (drone, size) in sizes.items():
        record_log(conn, drone, task, stream, size)


def blob_refusal(
    conn: Connection, limits: Limits, drone: str, size: int, task: str | None,
    path: str | None, fetch: str | None,
) -> ApiError | None:
    """Why an upload may not be received (read only), or None to receive it."""
    if fetch is not None:
        row = conn.execute("SELECT state, error FROM fetches WHERE id = ?", (fetch,)).fetchone()
        if row is None or row["state"] == "ready":
            return None  # the route answers these
        if row["state"] == "failed" and str(row["error"] or "").startswith(CODE):
            # A retry of a refused fetch: final, so that the drone stops sending it.
            return ApiError(409, "conflict", f"the fetch failed: {row['error']}")
    elif task is not None and path is not None:
        known = conn.execute(
            "SELECT 1 FROM artifacts WHERE task = ? AND path = ?", (task, path)
        ).fetchone()
        if known is not None:
            return None  # the same upload again costs nothing; other content is a 409 later
    try:
        check(conn, limits, drone, size)
    except ApiError as refusal:
        return refusal
    return None


def fail_fetch(conn: Connection, fetch_id: str, refusal: ApiError) -> None:
    """A fetch that does not fit fails at once, with the reason, rather than hang pending."""
    with transaction(conn):
        conn.execute(
            "UPDATE fetches SET state = 'failed', error = ? WHERE id = ? AND state = 'pending'",
            (f"{CODE}: {refusal.detail}", fetch_id),
        )


async def guard_blob(
    relay: Relay, drone: str, size: int, *, task: str | None, path: str | None,
    fetch: str | None,
) -> None:
    """Before an upload's body is read: refuse it (507) when it would not fit.

    The caller is the drone itself: relay/auth.py checked the signature over
    the claimed SHA-256 before the route ran (the body is never read first),
    so only the drone can make its own fetch fail here.
    """
    limits = Limits.of(relay.config)
    if fetch is None and not limits.active:
        return
    refusal = await relay.db.run(blob_refusal, limits, drone, size, task, path, fetch)
    if refusal is None:
        return
    if fetch is not None and refusal.status == STATUS:
        await relay.db.run(fail_fetch, fetch, refusal)
        relay.signals.notify(("fetch", fetch))
    raise refusal


# ----- counting the logs an older relay left behind (once, after migration 2) -----

def _flag(conn: Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM counters WHERE name = ?", (name,)).fetchone() is not None


def _clear_flag(conn: Connection, name: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM counters WHERE name = ?", (name,))


def _backfill_batch(conn: Connection, items: list[tuple[str, str, int]]) -> int:
    """Count logs not counted yet; a log an append has counted meanwhile is left alone."""
    charged = 0
    with transaction(conn):
        for task, stream, size in items:
            row = conn.execute("SELECT drone FROM tasks WHERE id = ?", (task,)).fetchone()
            if row is None or row["drone"] is None:
                continue
            cur = conn.execute(
                "INSERT INTO log_sizes (task, stream, size) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (task, stream, size),
            )
            if cur.rowcount:
                charge(conn, row["drone"], size)
                charged += size
    return charged


def backfill_logs(call: DbCall, logs_dir: Path) -> int | None:
    """Count every log on disk once, when migration 2 asked for it; None when not needed."""
    if not call(_flag, BACKFILL_FLAG):
        return None
    total = 0
    batch: list[tuple[str, str, int]] = []
    names = sorted(os.listdir(logs_dir)) if logs_dir.is_dir() else []
    for name in names:
        if not TASK_ID.fullmatch(name):
            continue
        for stream in STREAMS:
            try:
                size = (logs_dir / name / stream).stat().st_size
            except FileNotFoundError:
                continue
            batch.append((name, stream, size))
        if len(batch) >= BACKFILL_BATCH:
            total += call(_backfill_batch, batch)
            batch = []
    if batch:
        total += call(_backfill_batch, batch)
    call(_clear_flag, BACKFILL_FLAG)
    return total


def usage_by_drone(conn: Connection) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in conn.execute(
        "SELECT drone, bytes FROM storage ORDER BY drone")}

