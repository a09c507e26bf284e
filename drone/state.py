"""The drone's data directory: where everything lives, and writes that survive a crash.

Every file the drone relies on after a power cut (last sequence number, accepted
task ids, the task's record) is written with write-to-temp, fsync, rename,
fsync of the directory, so a power cut leaves either the old or the new
version, never a torn one; records that only matter while the task's processes
live, or that are decided again from fsynced ones, skip the fsyncs
(``durable=False``) but are still replaced atomically. See docs/drone.md for
the layout and which is which.

The data dir is private: folders 0700, files 0600, set explicitly rather
than left to the umask, and tightened at start if found looser. A task dir is
also writable by its task (same user), so the records in it are read and
written without following a symlink or waiting on a FIFO planted there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from dragoon.drone import safefile

log = logging.getLogger("dragoon.drone")

ACCEPTED_MEMORY: Final = 10_000  # how many accepted task ids are remembered
JSON_CAP: Final = 64 << 20  # a record larger than this is not the drone's
PRIVATE_DIR: Final = 0o700
_SAFE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def is_safe_id(value: object) -> bool:
    """Task and fetch ids become directory names: only a plain, short token is accepted."""
    return isinstance(value, str) and _SAFE_ID.fullmatch(value) is not None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content.

    ``durable=False`` skips the fsyncs, for hints that are cheap to lose
    (shipping offsets, which the relay corrects anyway). The temp file is made
    anew (``O_EXCL``, no symlink followed): whatever a task planted under its
    name is unlinked first, never written through. ``mode`` is exact, whatever
    the umask.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def write_json(path: Path, value: Any, *, durable: bool = True) -> None:
    write_atomic(path, json.dumps(value, indent=None, sort_keys=True).encode("utf-8"),
                 durable=durable)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it does not exist or is unreadable.

    A FIFO, device or symlink in its place counts as unreadable, found so at
    once: the drone reads these records from its event loop.
    """
    try:
        fd, found = safefile.open_regular(path)
    except OSError:
        return None
    try:
        if found.st_size > JSON_CAP:
            return None
        chunks: list[bytes] = []
        while block := os.read(fd, 1 << 20):
            chunks.append(block)
        return json.loads(b"".join(chunks))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def private_dir(path: Path) -> Path:
    """``path`` as a folder of mode 0700 (made, or tightened if it exists looser)."""
    path.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    loose = tighten(path)
    if loose is not None:
        log.warning("%s was mode %04o, open to other users; tightened to 0700", path, loose)
    return path


def tighten(path: Path, *, exact: bool = True) -> int | None:
    """Make the folder ``path`` mode 0700 (``exact=False``: only drop group and other bits);
    its old mode when that let others in, else None."""
    found = os.stat(path)
    if not stat.S_ISDIR(found.st_mode):
        raise ValueError(f"{path} is not a directory ({safefile.kind(found.st_mode)})")
    mode = stat.S_IMODE(found.st_mode)
    wanted = PRIVATE_DIR if exact else mode & 0o700
    if mode != wanted:
        os.chmod(path, wanted)
    return mode if mode & 0o077 else None


@dataclass(frozen=True)
class DataDir:
    """Names of every file and folder under the drone's ``--data`` directory."""

    root: Path

    @property
    def settings(self) -> Path:
        return self.root / "drone.toml"

    @property
    def key(self) -> Path:
        return self.root / "drone_key"

    @property
    def relay_key(self) -> Path:
        return self.root / "relay_key.pub"

    @property
    def x25519_key(self) -> Path:
        """The drone's encryption key (X25519, 0600; docs/drone.md), made at join."""
        return self.root / "drone_x25519"

    @property
    def authorized_pilots(self) -> Path:
        """The pilot keys the drone obeys (shared/trust.py), seeded at join, edited on the box."""
        return self.root / "authorized_pilots"

    @property
    def ca_cert(self) -> Path:
        """The relay's CA bundle, copied here by ``join --ca-cert``."""
        return self.root / "relay-ca.pem"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def tasks(self) -> Path:
        return self.root / "tasks"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def task_dir(self, task_id: str) -> Path:
        if not is_safe_id(task_id):
            raise ValueError(f"unsafe task id {task_id!r}")
        return self.tasks / task_id

    def work_dir(self, task_id: str) -> Path:
        if not is_safe_id(task_id):
            raise ValueError(f"unsafe task id {task_id!r}")
        return self.work / task_id

    def create(self) -> None:
        """Make the layout, private; an existing one made looser (by hand, by an older drone,
        by a deployment tool's default) is tightened, each loose folder named in the log."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        for path in (self.root, self.tasks, self.work):
            private_dir(path)
        for parent in (self.tasks, self.work):
            loose = [entry.name for entry in sorted(parent.iterdir())
                     if entry.is_dir() and not entry.is_symlink()
                     and tighten(entry, exact=False) is not None]
            if loose:
                log.warning("%d folder(s) under %s were open to other users (%s); their group "
                            "and other access is removed", len(loose), parent, ", ".join(loose[:5])
                            + (", …" if len(loose) > 5 else ""))

    def make_task_dir(self, task_id: str) -> Path:
        return private_dir(self.task_dir(task_id))

    def make_work_dir(self, task_id: str) -> Path:
        """The task's own folder, 0700: only the folder; what the task makes inside keeps
        the task's umask."""
        private_dir(self.work)
        return private_dir(self.work_dir(task_id))


@dataclass
class AdmissionLedger:
    """What must survive restarts to keep the at-most-once promise: last seq, accepted ids.

    An accept is made durable by its task's own record, ``tasks/<id>/task.json`` (which holds
    the id and the sequence), written and fsynced by the daemon before anything is spawned;
    ``state.json`` holds the accepts whose task dir is gone. So the one file fsynced on the
    task's path is task.json, and ``state.json`` is brought up to date (``save_if_behind``)
    only before a task dir is removed, and at the drone's stop: at every moment each accepted
    id is in a durable ``state.json`` or in a durable task dir, and ``load`` reads both.
    """

    path: Path
    last_seq: int = 0
    accepted: list[str] = field(default_factory=list)
    _accepted_set: set[str] = field(default_factory=set, repr=False)
    _changes: int = field(default=0, repr=False)  # accepts made in memory
    _saved: int = field(default=0, repr=False)  # of them, how many state.json holds
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: Path, tasks: Path | None = None) -> AdmissionLedger:
        """``state.json``, plus the accepts recorded in the task dirs under ``tasks``."""
        data = read_json(path)
        if not path.exists():
            ledger = cls(path)
        elif not isinstance(data, dict):
            # A damaged state file must not silently reset the sequence to 0.
            raise ValueError(f"{path} is damaged; refusing to guess the last sequence number")
        else:
            accepted = [str(x) for x in data.get("accepted", [])]
            ledger = cls(path, int(data.get("last_seq", 0)), accepted, set(accepted))
        held = sorted(_task_records(tasks) if tasks is not None else [], key=lambda r: r[1])
        for task_id, seq in held:
            ledger._remember(task_id, seq)
        return ledger

    def is_accepted(self, task_id: str) -> bool:
        return task_id in self._accepted_set

    def accept(self, task_id: str, seq: int) -> None:
        """Remember the task as accepted, in memory: its task.json is its durable record."""
        with self._lock:
            self._remember(task_id, seq)
            self._changes += 1

    def _remember(self, task_id: str, seq: int) -> None:
        self.last_seq = max(self.last_seq, seq)
        if task_id in self._accepted_set:
            return
        self.accepted.append(task_id)
        self._accepted_set.add(task_id)
        if len(self.accepted) > ACCEPTED_MEMORY:
            dropped = self.accepted[: len(self.accepted) - ACCEPTED_MEMORY]
            self.accepted = self.accepted[-ACCEPTED_MEMORY:]
            self._accepted_set.difference_update(dropped)

    def save_if_behind(self) -> None:
        """Make ``state.json`` hold every accept made so far (durably), unless it does.

        Called before a task dir is removed, from a thread: the snapshot is taken under a
        lock that ``accept`` (on the loop) holds for microseconds, the fsyncs outside it.
        """
        with self._write_lock:
            with self._lock:
                if self._saved >= self._changes:
                    return
                target = self._changes
                snapshot = {"last_seq": self.last_seq, "accepted": list(self.accepted)}
            write_json(self.path, snapshot)
            with self._lock:
                self._saved = max(self._saved, target)

    def save(self) -> None:
        """Write ``state.json`` now, durably, whatever it holds."""
        with self._write_lock:
            with self._lock:
                target = self._changes
                snapshot = {"last_seq": self.last_seq, "accepted": list(self.accepted)}
            write_json(self.path, snapshot)
            with self._lock:
                self._saved = max(self._saved, target)


def _task_records(tasks: Path) -> list[tuple[str, int]]:
    """(id, seq) of every task dir's readable task.json: the accepts not yet in state.json."""
    found: list[tuple[str, int]] = []
    try:
        entries = sorted(tasks.iterdir())
    except OSError:
        return found
    for entry in entries:
        if not is_safe_id(entry.name):
            continue
        record = read_json(entry / "task.json")
        if (isinstance(record, dict) and record.get("id") == entry.name
                and isinstance(record.get("seq"), int)):
            found.append((entry.name, int(record["seq"])))
    return found
