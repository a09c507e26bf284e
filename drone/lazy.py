"""Stand-ins for imports of the task path, so that an idle drone never loads it.

A drone spends most of its life idle: one long-poll every ``poll_wait``
seconds. The modules that verify, launch, supervise and ship a task (verify,
runner, spawn, artifacts and what they import: psutil, ctypes, the spec
rules) are loaded when the first task arrives, or when a restarted drone
re-adopts one, not at start (docs/drone.md, "Memory"). The names stay the
ones the code uses; only their binding is deferred.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any


def lazy_module(name: str) -> ModuleType:
    """``import name``, executed at the first attribute read (importlib's LazyLoader)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def lazy_call(module: str, name: str) -> Any:
    """``from module import name`` for a function or class that is only called: the import
    happens at the first call (a dictionary look-up in ``sys.modules`` after that)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}, imported at its first call."
    return call
