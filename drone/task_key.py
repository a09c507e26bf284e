"""The task key a running task's streams are sealed under, as the daemon's accept kept it.

``Drone.admit`` opens the sealed task and writes its key (base64) into the task's
``task.json`` (task dirs are 0700); whatever seals or opens a stream of the task (its
messages, its stdin) reads it from there, so a drone restarted mid-task has it again.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from dragoon.drone.state import read_json
from dragoon.shared.e2e import KEY_BYTES


def load_task_key(task_dir: Path) -> bytes | None:
    """The task's key, or None when task.json holds none (a task from before sealing)."""
    record = read_json(task_dir / "task.json")
    text = record.get("task_key") if isinstance(record, dict) else None
    if not isinstance(text, str):
        return None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == KEY_BYTES else None
