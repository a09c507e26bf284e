"""The pilot verbs of CLI.md as click commands, named in dragoon/cli.py's VERBS table.

Importing this package costs nothing: a verb's module (and with it click, the
API client, httpx, the key code) is imported when the verb is looked up here,
so ``dragoon run`` never loads the modules of ``drones``, ``fetch`` or ``login``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each verb's command, by the module that defines it.
_HOMES = {
    "drain": "drones", "drones": "drones", "enroll": "drones",
    "artifact": "files", "artifacts": "files", "fetch": "files",
    "inbox": "inbox",
    "login": "session", "logout": "session",
    "cancel": "tasks", "logs": "tasks", "run": "tasks", "submit": "tasks", "task": "tasks",
    "tasks": "tasks",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
