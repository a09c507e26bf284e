"""Retention: the output of tasks finished long ago is dropped; their records stay.

A relay that runs for months must not keep every byte of every task. A task
finished (or cancelled, or lost) before the cutoff is *pruned*: its logs,
artifact records and inbox messages go, its row stays as a tombstone (state,
times, exit code, who ran it where: ``tasks.pruned_at`` says when the rest
went). Fetches older than the cutoff go whole. A blob (content-addressed,
shared by every artifact and fetch with that content) goes only when no kept
record refers to it any more. Queued, dispatched and running tasks are never
touched, whatever their age.

Safe beside a serving relay: each batch is one short transaction, files are
deleted only after it commits, and a file already gone is no error. A blob
touched within ``BLOB_GRACE`` is left for a later pass, since an upload may
be about to refer to it (relay/blobs.py touches existing content again).

Every function that needs the database takes ``call``: ``call(fn, *args)``
runs ``fn(conn, *args)`` where the connection lives (``Database.call`` in
the relay, a plain connection in ``dragoon relay gc``), so the same code runs
in both without holding the relay's database thread during disk work.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from dragoon.relay import quota
from dragoon.relay.blobs import SHA256
from dragoon.relay.db import transaction
from dragoon.relay.output import CLOSED
from dragoon.shared.models import FINAL_STATES

BATCH: Final = 200  # tasks per transaction: short enough never to hold the relay up
BLOB_GRACE: Final = 3600.0  # seconds: a blob or upload touched this recently is left alone
RECLAIMED: Final = "reclaimed_bytes"

_FINAL_SQL: Final = ", ".join(f"'{state.value}'" for state in sorted(FINAL_STATES))
# The partial index tasks_unpruned serves exactly this condition.
_DUE_TASK: Final = f"pruned_at IS NULL AND finished_at < :cutoff AND state IN ({_FINAL_SQL})"
_DUE_FETCH: Final = "created_at < :cutoff AND state != 'pending'"

DbCall = Callable[..., Any]


@dataclass
class Report:
    """What a pass deleted, or with ``dry_run`` would delete: counts and bytes."""

    cutoff: float | None
    dry_run: bool
    tasks: int = 0
    log_files: int = 0
    log_bytes: int = 0
    artifacts: int = 0
    messages: int = 0
    fetches: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    shared_blobs: int = 0  # referred to by a pruned record and also by a kept one: kept
    orphan_files: int = 0  # blobs no record refers to, and abandoned uploads
    orphan_bytes: int = 0
    missing: int = 0  # files a record named that were already gone
    tombstones: list[str] = field(default_factory=list)  # the tasks pruned (at most BATCH)

    @property
    def bytes(self) -> int:
        return self.log_bytes + self.blob_bytes + self.orphan_bytes

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bytes"] = self.bytes
        return data


@dataclass
class Pruned:
    tasks: list[str]
    blobs: list[str]  # content no record refers to any more
    artifacts: int
    messages: int
    fetches: int
    shared: int  # content a pruned record held that a kept record still refers to


def _in(values: Iterable[str]) -> str:
    return ",".join("?" * len(list(values)))


def _unreferenced(conn: sqlite3.Connection, shas: Iterable[str]) -> list[str]:
    free = []
    for sha in sorted(set(shas)):
        if conn.execute(
            "SELECT 1 FROM artifacts WHERE sha256 = ? UNION ALL"
            " SELECT 1 FROM fetches WHERE sha256 = ? LIMIT 1", (sha, sha),
        ).fetchone() is None:
            free.append(sha)
    return free


def prune_tasks(conn: sqlite3.Connection, cutoff: float, limit: int = BATCH) -> Pruned | None:
    """Make tombstones of up to ``limit`` due tasks, in one transaction; None when none is due."""
    with transaction(conn):
        ids = [r[0] for r in conn.execute(
            f"SELECT id FROM tasks WHERE {_DUE_TASK} ORDER BY finished_at LIMIT :limit",  # noqa: S608
            {"cutoff": cutoff, "limit": limit},
        )]
        if not ids:
            return None
        marks = _in(ids)
        released: dict[str, int] = {}
        for table in ("log_sizes", "artifacts"):
            for drone, amount in conn.execute(
                f"SELECT t.drone, SUM(x.size) FROM {table} x JOIN tasks t ON t.id = x.task"  # noqa: S608
                f" WHERE x.task IN ({marks}) AND t.drone IS NOT NULL GROUP BY t.drone", ids,
            ):
                released[drone] = released.get(drone, 0) + int(amount)
        shas = [r[0] for r in conn.execute(
            f"SELECT DISTINCT sha256 FROM artifacts WHERE task IN ({marks})", ids  # noqa: S608
        )]
        artifacts = conn.execute(f"DELETE FROM artifacts WHERE task IN ({marks})", ids).rowcount  # noqa: S608
        messages = conn.execute(f"DELETE FROM messages WHERE task IN ({marks})", ids).rowcount  # noqa: S608
        conn.execute(f"DELETE FROM log_sizes WHERE task IN ({marks})", ids)  # noqa: S608
        conn.execute(
            f"UPDATE tasks SET pruned_at = ? WHERE id IN ({marks})", (time.time(), *ids)  # noqa: S608
        )
        for drone, amount in released.items():
            quota.charge(conn, drone, -amount)
        free = _unreferenced(conn, shas)
    return Pruned(ids, free, artifacts, messages, 0, len(set(shas)) - len(free))


def prune_fetches(conn: sqlite3.Connection, cutoff: float, limit: int = BATCH) -> Pruned | None:
    """Delete up to ``limit`` finished fetches created before the cutoff, in one transaction."""
    with transaction(conn):
        rows = conn.execute(
            f"SELECT id, drone, state, sha256, size FROM fetches WHERE {_DUE_FETCH}"  # noqa: S608
            " LIMIT :limit", {"cutoff": cutoff, "limit": limit},
        ).fetchall()
        if not rows:
            return None
        ids = [r["id"] for r in rows]
        conn.execute(f"DELETE FROM fetches WHERE id IN ({_in(ids)})", ids)  # noqa: S608
        for row in rows:
            if row["state"] == "ready" and row["size"]:
                quota.charge(conn, row["drone"], -int(row["size"]))
        shas = {r["sha256"] for r in rows if r["sha256"]}
        free = _unreferenced(conn, shas)
    return Pruned([], free, 0, 0, len(ids), len(shas) - len(free))


def add_reclaimed(conn: sqlite3.Connection, amount: int) -> None:
    if amount <= 0:
        return
    with transaction(conn):
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name)"
            " DO UPDATE SET value = counters.value + excluded.value", (RECLAIMED, amount),
        )


# ----- files, after the rows have committed -----

def _remove_logs(logs_dir: Path, task: str, report: Report, *, dry_run: bool) -> int:
    folder = logs_dir / task
    freed = 0
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return 0
    for name in names:
        path = folder / name
        try:
            size = path.lstat().st_size
            if not dry_run:
                path.unlink()
        except FileNotFoundError:
            continue
        if name == CLOSED:
            continue  # the finished log's marker, not output: goes with its folder, uncounted
        report.log_files += 1
        report.log_bytes += size
        freed += size
    if not dry_run:
        with contextlib.suppress(OSError):
            folder.rmdir()
    return freed


def _remove_blob(blobs_dir: Path, sha: str, report: Report, *, dry_run: bool, now: float) -> int:
    path = blobs_dir / sha[:2] / sha
    try:
        st = path.stat()
    except FileNotFoundError:
        report.missing += 1
        return 0
    if now - st.st_mtime < BLOB_GRACE:
        return 0  # an upload may be about to refer to it: the orphan pass takes it later
    if not dry_run:
        try:
            path.unlink()
        except FileNotFoundError:
            report.missing += 1
            return 0
    report.blobs += 1
    report.blob_bytes += st.st_size
    return st.st_size


class Space(Protocol):
    """Where the bytes of pruned records are deleted: files in the data dir (``FileSpace``)
    or rows in PostgreSQL (relay/pg_retention.py ``PgSpace``)."""

    def remove_logs(self, task: str, report: Report, *, dry_run: bool) -> int: ...

    def remove_blob(self, sha: str, report: Report, *, dry_run: bool, now: float) -> int: ...

    def orphans(self, call: DbCall, report: Report, *, now: float) -> int: ...


@dataclass(frozen=True)
class FileSpace:
    logs_dir: Path
    blobs_dir: Path

    def remove_logs(self, task: str, report: Report, *, dry_run: bool) -> int:
        return _remove_logs(self.logs_dir, task, report, dry_run=dry_run)

    def remove_blob(self, sha: str, report: Report, *, dry_run: bool, now: float) -> int:
        return _remove_blob(self.blobs_dir, sha, report, dry_run=dry_run, now=now)

    def orphans(self, call: DbCall, report: Report, *, now: float) -> int:
        return collect_orphans(call, self.blobs_dir, report, now=now)


# ----- dry run: the same selection, read only -----

def _plan_rows(conn: sqlite3.Connection, cutoff: float) -> dict[str, Any]:
    args = {"cutoff": cutoff}
    due_tasks = f"SELECT id FROM tasks WHERE {_DUE_TASK}"  # noqa: S608
    ids = [r[0] for r in conn.execute(due_tasks, args)]

    def count(sql: str) -> int:
        return int(conn.execute(sql, args).fetchone()[0])

    gone = [r[0] for r in conn.execute(
        f"SELECT sha256 FROM artifacts WHERE task IN ({due_tasks})"  # noqa: S608
        f" UNION SELECT sha256 FROM fetches WHERE {_DUE_FETCH} AND sha256 IS NOT NULL", args,
    )]
    kept = {r[0] for r in conn.execute(
        f"SELECT sha256 FROM artifacts WHERE task NOT IN ({due_tasks})"  # noqa: S608
        f" UNION SELECT sha256 FROM fetches WHERE NOT ({_DUE_FETCH}) AND sha256 IS NOT NULL",
        args,
    )}
    return {
        "tasks": ids,
        "artifacts": count(f"SELECT COUNT(*) FROM artifacts WHERE task IN ({due_tasks})"),  # noqa: S608
        "messages": count(f"SELECT COUNT(*) FROM messages WHERE task IN ({due_tasks})"),  # noqa: S608
        "fetches": count(f"SELECT COUNT(*) FROM fetches WHERE {_DUE_FETCH}"),  # noqa: S608
        "blobs": [sha for sha in gone if sha not in kept],
        "shared": len([sha for sha in gone if sha in kept]),
    }


# ----- orphans: content no record names, and uploads that never finished -----

def _referenced(conn: sqlite3.Connection, shas: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(shas), 400):
        chunk = shas[start:start + 400]
        marks = _in(chunk)
        found.update(r[0] for r in conn.execute(
            f"SELECT sha256 FROM artifacts WHERE sha256 IN ({marks}) UNION"  # noqa: S608
            f" SELECT sha256 FROM fetches WHERE sha256 IN ({marks})", (*chunk, *chunk),
        ))
    return found


def collect_orphans(call: DbCall, blobs_dir: Path, report: Report, *, now: float) -> int:
    """Delete blobs no record refers to and stale upload temp files, older than the grace."""
    freed = 0
    if not blobs_dir.is_dir():
        return 0
    for sub in sorted(blobs_dir.iterdir()):
        if not sub.is_dir():
            continue
        if sub.name == "tmp":
            candidates = list(sub.iterdir())
        elif len(sub.name) == 2:
            names = [p.name for p in sub.iterdir() if SHA256.fullmatch(p.name)]
            used = call(_referenced, names) if names else set()
            candidates = [sub / n for n in names if n not in used]
        else:
            continue
        for path in candidates:
            try:
                st = path.lstat()
                if now - st.st_mtime < BLOB_GRACE or not path.is_file():
                    continue
                if not report.dry_run:
                    path.unlink()
            except FileNotFoundError:
                continue
            report.orphan_files += 1
            report.orphan_bytes += st.st_size
            freed += st.st_size
    return freed


# ----- one pass -----

def collect(
    call: DbCall, logs_dir: Path, blobs_dir: Path, *, cutoff: float | None, dry_run: bool = False,
    orphans: bool = True, should_stop: Callable[[], bool] = lambda: False,
    space: Space | None = None,
) -> Report:
    """Prune what is due (``cutoff``: finished before it; None: nothing is due), then orphans.

    The bytes go from ``space``: the files under ``logs_dir`` and ``blobs_dir`` unless
    given (a relay on PostgreSQL passes its rows', relay/stores.py ``open_space``)."""
    space = space or FileSpace(logs_dir, blobs_dir)
    report = Report(cutoff, dry_run)
    now = time.time()
    if cutoff is not None and dry_run:
        plan = call(_plan_rows, cutoff)
        report.tasks = len(plan["tasks"])
        report.artifacts, report.messages = plan["artifacts"], plan["messages"]
        report.fetches, report.shared_blobs = plan["fetches"], plan["shared"]
        report.tombstones = plan["tasks"][:BATCH]
        for task in plan["tasks"]:
            space.remove_logs(task, report, dry_run=True)
        for sha in plan["blobs"]:
            space.remove_blob(sha, report, dry_run=True, now=now)
    elif cutoff is not None:
        for prune in (prune_tasks, prune_fetches):
            while not should_stop():
                batch: Pruned | None = call(prune, cutoff)
                if batch is None:
                    break
                report.tasks += len(batch.tasks)
                report.artifacts += batch.artifacts
                report.messages += batch.messages
                report.fetches += batch.fetches
                report.shared_blobs += batch.shared
                if len(report.tombstones) < BATCH:
                    report.tombstones.extend(batch.tasks[:BATCH - len(report.tombstones)])
                freed = sum(space.remove_logs(t, report, dry_run=False) for t in batch.tasks)
                freed += sum(space.remove_blob(s, report, dry_run=False, now=now)
                             for s in batch.blobs)
                call(add_reclaimed, freed)
    if orphans and not should_stop():
        freed = space.orphans(call, report, now=now)
        if not dry_run:
            call(add_reclaimed, freed)
    return report


def storage_stats(conn: sqlite3.Connection) -> dict[str, Any]:
    """Bytes held, in all and per drone, and bytes reclaimed ever: for /metrics.

    Proposed names: ``dragoon_storage_bytes{drone=…}`` (gauge, one per drone),
    ``dragoon_storage_reclaimed_bytes_total`` (counter, kept in the database,
    so it survives restarts and counts ``dragoon relay gc`` runs too).
    """
    drones = quota.usage_by_drone(conn)
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (RECLAIMED,)).fetchone()
    return {
        "bytes": sum(drones.values()),
        "drones": drones,
        "reclaimed_bytes": 0 if row is None else int(row[0]),
    }

