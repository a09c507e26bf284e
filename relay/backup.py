"""Backup and restore of a relay data dir as one tar file, taken while the relay serves.

The consistent point is the database: it is copied first, with SQLite's
online backup API (one step, so one read snapshot), and everything else is
cut to what that copy knows. Logs are append-only, and ``log_sizes`` in the
copy records how many bytes of each the relay had acknowledged: the log of a
task that may still run goes in truncated to exactly that length (its drone
ships the rest again, from the relay's expected offset: a 409 ``offset_gap``
tells it where), and a finished task's log, which no longer grows, goes in
whole. The copy of the database goes in last, once it records every log at
the length archived, so the restored relay never holds fewer bytes of a log
than its database says, nor more than it counts. Blobs go in when the copy
refers to them; the keys and relay.toml go in as they are.

The archive holds the relay's signing key and the pilots' TOTP secrets: it is
written with mode 0600, and restore lays files down 0600 in a 0700 folder.
Restore reads nothing it did not expect: every member must be a regular file
with a name of the data dir's own shapes (no links, no ``..``, no absolute
paths), checked before a byte is written.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from dragoon.relay import events
from dragoon.relay.config import DB_FILE, KEY_FILE, RelayConfig
from dragoon.relay.db import SCHEMA_VERSION
from dragoon.relay.output import ORDER_TRUNCATED, STREAMS, TRUNCATED

FORMAT: Final = 1
MANIFEST: Final = "dragoon-backup.json"
_TOP: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_LOG: Final = re.compile(r"logs/(t-[a-z2-7]{10})/("
                         + "|".join((*STREAMS, TRUNCATED, ORDER_TRUNCATED)) + ")")
_BLOB: Final = re.compile(r"blobs/([0-9a-f]{2})/(\1[0-9a-f]{62})")
_DB_SIDE_FILES: Final = (f"{DB_FILE}-wal", f"{DB_FILE}-shm", f"{DB_FILE}-journal")
_NOT_TOP: Final = (*_DB_SIDE_FILES, "logs", "blobs", MANIFEST)


class BackupError(Exception):
    """A refusal, with the one line to show."""


@dataclass
class Summary:
    path: Path
    db_bytes: int = 0
    files: int = 0
    logs: int = 0
    log_bytes: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    missing: list[str] = field(default_factory=list)  # named by the database, gone meanwhile


# ----- backup -----

def snapshot_db(source: Path, target: Path) -> None:
    """A consistent copy of a live WAL database into a single self-contained file."""
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # pages=-1: one step, one read transaction, one moment
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def _info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data), time.time()), io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path, limit: int | None = None) -> int:
    """Add ``path`` (its first ``limit`` bytes); the size added, -1 when the file is gone."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return -1
    with handle:
        st = os.fstat(handle.fileno())
        size = st.st_size if limit is None else min(limit, st.st_size)
        tar.addfile(_info(name, size, st.st_mtime), handle)
    return size


def _open_archive(dest: Path) -> tuple[Path, IO[bytes]]:
    """A private temp file beside ``dest``, renamed over it only once complete."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.fchmod(fd, 0o600)
    return Path(tmp), os.fdopen(fd, "wb")


def backup(config: RelayConfig, dest: Path) -> Summary:
    """Write the archive to ``dest`` (``.tar``, or gzip-compressed for ``.tar.gz``/``.tgz``)."""
    data = config.data_dir
    if config.database:
        from dragoon.relay.pg import masked

        raise BackupError(
            f"this relay keeps its state in PostgreSQL ({masked(config.database)}): back it "
            f"up with pg_dump (docs/storage.md), and keep a copy of {data} (relay.toml, the "
            f"signing key)")
    if not config.db_path.exists():
        raise BackupError(f"{data} has no {DB_FILE}: not a relay data directory")
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} is not a directory")
    summary = Summary(dest)
    compress = dest.name.endswith((".gz", ".tgz"))
    tmp, out = _open_archive(dest)
    try:
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".dragoon-backup-") as work:
            copy = Path(work) / DB_FILE
            snapshot_db(config.db_path, copy)
            snapshot_at = time.time()
            conn = sqlite3.connect(copy)
            conn.row_factory = sqlite3.Row
            try:
                schema = conn.execute("PRAGMA user_version").fetchone()[0]
                logs = _logs_to_archive(conn, config)
                blobs = sorted({r[0] for r in conn.execute(
                    "SELECT sha256 FROM artifacts UNION SELECT sha256 FROM fetches"
                    " WHERE sha256 IS NOT NULL")})
            finally:
                conn.close()
            with out, tarfile.open(fileobj=out, mode="w:gz" if compress else "w") as tar:
                manifest = {"format": FORMAT, "schema_version": schema, "created_at": snapshot_at,
                            "source": str(data)}
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
                _add_top_files(tar, data, summary)
                changed = _add_logs(tar, config, logs, snapshot_at, summary)
                _add_blobs(tar, config, blobs, summary)
                _settle(copy, changed)
                summary.db_bytes = _add_file(tar, DB_FILE, copy)
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return summary


@dataclass(frozen=True)
class _Log:
    recorded: int | None  # what log_sizes says; None: not counted (yet)
    limit: int | None  # how much goes in; None: the whole file


_FINISHED: Final = "('succeeded', 'failed', 'timed_out', 'cancelled')"


def _logs_to_archive(conn: sqlite3.Connection, config: RelayConfig) -> dict[tuple[str, str], _Log]:
    """Which logs go in, and how much of each.

    A log that may still grow goes in cut to its recorded length: its drone
    sends the rest again. A finished task's log no longer grows and its drone
    has forgotten it, so it goes in whole: should the count have missed its
    last chunk (a crash between the append and the count), the archive still
    holds every byte, and the copy's count is set right (``_settle``).
    """
    logs = {(r["task"], r["stream"]): _Log(int(r["size"]), int(r["size"])) for r in conn.execute(
        "SELECT task, stream, size FROM log_sizes")}
    finished = [r[0] for r in conn.execute(
        f"SELECT id FROM tasks WHERE state IN {_FINISHED} AND pruned_at IS NULL")]  # noqa: S608
    pending = conn.execute(
        "SELECT 1 FROM counters WHERE name = 'logs_backfill_pending'").fetchone() is not None
    if pending and config.logs_dir.is_dir():
        # Not counted yet (a relay upgraded moments ago): every log goes in whole, and the
        # restored relay counts them itself.
        finished = os.listdir(config.logs_dir)
    for task in finished:
        for stream in STREAMS:
            if (config.logs_dir / task / stream).is_file():
                known = logs.get((task, stream))
                logs[(task, stream)] = _Log(None if known is None else known.recorded, None)
    return logs


def _add_top_files(tar: tarfile.TarFile, data: Path, summary: Summary) -> None:
    """The keys, relay.toml and any other file the admin keeps at the top (metrics.token)."""
    for entry in sorted(data.iterdir()):
        if (entry.name in (DB_FILE, *_NOT_TOP) or not _TOP.fullmatch(entry.name)
                or entry.is_symlink() or not entry.is_file()):
            continue
        if _add_file(tar, entry.name, entry) >= 0:
            summary.files += 1


def _add_logs(tar: tarfile.TarFile, config: RelayConfig, logs: dict[tuple[str, str], _Log],
              snapshot_at: float, summary: Summary) -> dict[tuple[str, str], int]:
    """Each log as ``_logs_to_archive`` says; returns those archived at another length than
    the copy records."""
    changed: dict[tuple[str, str], int] = {}
    for task in sorted({task for task, _ in logs}):
        for stream in STREAMS:
            log = logs.get((task, stream))
            if log is None:
                continue
            name = f"logs/{task}/{stream}"
            added = _add_file(tar, name, config.logs_dir / task / stream, limit=log.limit)
            if log.recorded is not None and max(added, 0) != log.recorded:
                changed[(task, stream)] = max(added, 0)
            elif log.recorded is None and added > 0:
                changed[(task, stream)] = added
            if added < 0:
                summary.missing.append(name)
                continue
            if log.limit is not None and added < log.limit:
                summary.missing.append(f"{name} (short: {added} of {log.limit})")
            summary.logs += 1
            summary.log_bytes += added
        for flag_name in (TRUNCATED, ORDER_TRUNCATED):
            flag = config.logs_dir / task / flag_name
            # A cap reached after the database copy belongs to bytes the archive does not hold.
            with contextlib.suppress(FileNotFoundError):
                if flag.stat().st_mtime <= snapshot_at:
                    _add_file(tar, f"logs/{task}/{flag_name}", flag)
    return changed


def _settle(copy: Path, changed: dict[tuple[str, str], int]) -> None:
    """Make the database copy record each log at exactly the length archived.

    A log pruned (or damaged) between the copy and its turn is shorter; a
    finished task's log whose last chunk was never counted is longer. Its
    recorded length and its drone's count follow what the archive holds.
    """
    if not changed:
        return
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for (task, stream), held in changed.items():
            owner = conn.execute("SELECT drone FROM tasks WHERE id = ?", (task,)).fetchone()
            if owner is None or owner[0] is None:
                continue
            row = conn.execute("SELECT size FROM log_sizes WHERE task = ? AND stream = ?",
                               (task, stream)).fetchone()
            conn.execute("INSERT INTO log_sizes (task, stream, size) VALUES (?, ?, ?)"
                         " ON CONFLICT (task, stream) DO UPDATE SET size = excluded.size",
                         (task, stream, held))
            delta = held - (0 if row is None else int(row[0]))
            conn.execute("INSERT INTO storage (drone, bytes) VALUES (?, MAX(?, 0))"
                         " ON CONFLICT (drone) DO UPDATE SET bytes = MAX(bytes + ?, 0)",
                         (owner[0], delta, delta))
        conn.execute("COMMIT")
    finally:
        conn.close()


def _add_blobs(tar: tarfile.TarFile, config: RelayConfig, blobs: list[str],
               summary: Summary) -> None:
    for sha in blobs:
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            continue
        added = _add_file(tar, f"blobs/{sha[:2]}/{sha}", config.blobs_dir / sha[:2] / sha)
        if added < 0:
            summary.missing.append(f"blobs/{sha[:2]}/{sha}")
            continue
        summary.blobs += 1
        summary.blob_bytes += added


# ----- restore -----

def _check_member(member: tarfile.TarInfo) -> str:
    """The member's name if it is one the data dir has; BackupError otherwise."""
    name = member.name
    if not member.isreg():
        raise BackupError(f"the archive holds {name!r}, which is not a regular file")
    if name == MANIFEST or _LOG.fullmatch(name) or _BLOB.fullmatch(name):
        return name
    if _TOP.fullmatch(name) and name not in _NOT_TOP:
        return name
    raise BackupError(f"the archive holds {name!r}, which is no part of a relay data directory")


def restore(archive: Path, data_dir: Path) -> Summary:
    """Unpack ``archive`` into ``data_dir``, which must be empty or not exist yet."""
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(f"{data_dir} is not an empty directory; restore only into a new one")
    try:
        tar = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{archive}: not a readable tar archive ({exc})") from None
    summary = Summary(data_dir)
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BackupError(f"{archive}: a damaged archive ({exc})") from None
        names = [_check_member(m) for m in members]
        if len(set(names)) != len(names):
            raise BackupError("the archive holds a file twice")
        for needed in (MANIFEST, DB_FILE, KEY_FILE):
            if needed not in names:
                raise BackupError(f"the archive has no {needed}: not a dragoon relay backup")
        manifest = _manifest(tar, members[names.index(MANIFEST)])
        if manifest.get("format") != FORMAT:
            raise BackupError(f"backup format {manifest.get('format')!r}; this relay reads "
                              f"{FORMAT}")
        if int(manifest.get("schema_version", 0)) > SCHEMA_VERSION:
            raise BackupError(f"the backup's database has schema {manifest['schema_version']}; "
                              f"this relay knows {SCHEMA_VERSION}: restore with a newer dragoon")
        created = not data_dir.exists()
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        try:
            for member, name in zip(members, names, strict=True):
                if name != MANIFEST:
                    _extract(tar, member, data_dir / name, summary)
            _check_db(data_dir / DB_FILE)
            events.fork_history(data_dir / DB_FILE)  # its cockpits reload, not resume
        except (tarfile.TarError, EOFError, OSError) as exc:
            _empty(data_dir, remove=created)
            raise BackupError(f"{archive}: cannot unpack ({exc})") from None
        except BaseException:
            _empty(data_dir, remove=created)
            raise
    for sub in ("logs", "blobs"):
        (data_dir / sub).mkdir(mode=0o700, exist_ok=True)
    os.sync()
    return summary


def _manifest(tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, object]:
    handle = tar.extractfile(member)
    assert handle is not None
    try:
        value = json.loads(handle.read(64 * 1024))
    except ValueError:
        raise BackupError(f"{MANIFEST} in the archive is not JSON") from None
    if not isinstance(value, dict):
        raise BackupError(f"{MANIFEST} in the archive is not an object")
    return value


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path,
             summary: Summary) -> None:
    """Write one checked member by hand: a fresh 0600 file, never through a link."""
    for parent in reversed(target.relative_to(summary.path).parents[:-1]):
        folder = summary.path / parent
        if not folder.is_dir():
            folder.mkdir(mode=0o700)
    source = tar.extractfile(member)
    assert source is not None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, source:
        shutil.copyfileobj(source, out, 1 << 20)
    os.utime(target, (member.mtime, member.mtime))
    name = member.name
    if name.startswith("logs/"):
        summary.logs += 1
        summary.log_bytes += member.size
    elif name.startswith("blobs/"):
        summary.blobs += 1
        summary.blob_bytes += member.size
    elif name == DB_FILE:
        summary.db_bytes = member.size
    else:
        summary.files += 1


def _check_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"the archive's {DB_FILE} is not a database: {exc}") from None
    finally:
        conn.close()
    if verdict != "ok":
        raise BackupError(f"the archive's {DB_FILE} fails its integrity check: {verdict}")


def _empty(data_dir: Path, *, remove: bool) -> None:
    """Take back what a failed restore wrote (the folder too, if restore made it)."""
    for entry in data_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
    if remove:
        with contextlib.suppress(OSError):
            data_dir.rmdir()

