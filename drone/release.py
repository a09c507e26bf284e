"""Giving back the disk under output the relay already holds, while the task still runs.

A run that writes for days must not fill the drone's disk with a spool of
bytes that are safe at the relay. The spool keeps its offsets (the task
appends to it and the shipper reads it by offset), so acknowledged bytes are
not cut off the front but punched out: ``fallocate(PUNCH_HOLE | KEEP_SIZE)``
frees their blocks and leaves a sparse file of the same length. Best effort:
on a filesystem without hole punching nothing happens and the spool is
simply deleted after the finish, as always.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from dragoon.drone import safefile

FALLOC_FL_KEEP_SIZE: Final = 0x01
FALLOC_FL_PUNCH_HOLE: Final = 0x02
BLOCK: Final = 1 << 20  # punch whole MiBs, never the block under the write head
MARGIN: Final = 16 << 20  # keep the last 16 MiB acknowledged, should the relay ask again
STEP: Final = 64 << 20  # punch at most once per 64 MiB acknowledged

_libc: ctypes.CDLL | None = None


def _fallocate() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        if name is None:
            return None
        _libc = ctypes.CDLL(name, use_errno=True)
    func = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
    if func is not None:
        func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        func.restype = ctypes.c_int
    return func


def punch(path: Path, upto: int) -> bool:
    """Free the blocks of ``path`` below ``upto`` (rounded down to a MiB); False if it cannot."""
    length = upto - upto % BLOCK
    if length <= 0:
        return False
    func = _fallocate()
    if func is None:
        return False
    try:
        # The task can replace its spool file: a FIFO there must not make the drone wait.
        fd, _ = safefile.open_regular(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        return func(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, length) == 0
    finally:
        os.close(fd)


class Releaser:
    """Decides when a stream's acknowledged prefix is worth punching out."""

    def __init__(self, path: Path, *, before_punch: Callable[[], None] | None = None) -> None:
        """``before_punch`` runs before blocks go: what makes them safe to free must be on
        disk for good by then (a sealed spool synced before its plaintext is punched)."""
        self.path = path
        self.released = 0  # bytes below this offset are no longer on disk
        self._before_punch = before_punch
        self._tried = 0

    def acknowledged(self, offset: int) -> None:
        target = offset - MARGIN
        if target - max(self.released, self._tried) < STEP:
            return
        self._tried = target  # a filesystem that cannot punch is not asked (or synced) often
        if self._before_punch is not None:
            self._before_punch()
        if punch(self.path, target):
            self.released = target - target % BLOCK
