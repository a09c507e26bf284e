"""The drone's data directory: where everything lives, and writes that survive a crash.

Every file the drone relies on after a restart (last sequence number, accepted
task ids, per-task records) is written with write-to-temp, fsync, rename,
fsync of the directory, so a power cut leaves either the old or the new
version, never a torn one. See docs/drone.md for the layout.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ACCEPTED_MEMORY: Final = 10_000  # how many accepted task ids are remembered
_SAFE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def is_safe_id(value: object) -> bool:
    """Task and fetch ids become directory names: only a plain, short token is accepted."""
    return isinstance(value, str) and _SAFE_ID.fullmatch(value) is not None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content.

    ``durable=False`` skips the fsyncs, for hints that are cheap to lose
    (shipping offsets, which the relay corrects anyway).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
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
    """The JSON in ``path``, or None when it does not exist or is unreadable."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


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
        for path in (self.root, self.tasks, self.work):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        os.chmod(self.tasks, 0o700)


@dataclass
class DroneState:
    """What must survive restarts to keep the at-most-once promise: last seq, accepted ids."""

    path: Path
    last_seq: int = 0
    accepted: list[str] = field(default_factory=list)
    _accepted_set: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def load(cls, path: Path) -> DroneState:
        data = read_json(path)
        if not path.exists():
            return cls(path)
        if not isinstance(data, dict):
            # A damaged state file must not silently reset the sequence to 0.
            raise ValueError(f"{path} is damaged; refusing to guess the last sequence number")
        accepted = [str(x) for x in data.get("accepted", [])]
        return cls(path, int(data.get("last_seq", 0)), accepted, set(accepted))

    def is_accepted(self, task_id: str) -> bool:
        return task_id in self._accepted_set

    def accept(self, task_id: str, seq: int) -> None:
        """Record the task before anything is spawned, durably."""
        self.last_seq = max(self.last_seq, seq)
        self.accepted.append(task_id)
        self._accepted_set.add(task_id)
        if len(self.accepted) > ACCEPTED_MEMORY:
            dropped = self.accepted[: len(self.accepted) - ACCEPTED_MEMORY]
            self.accepted = self.accepted[-ACCEPTED_MEMORY:]
            self._accepted_set.difference_update(dropped)
        self.save()

    def save(self) -> None:
        write_json(self.path, {"last_seq": self.last_seq, "accepted": self.accepted})
