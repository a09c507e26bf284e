"""Waking a task's shippers when its task dir changes: inotify, not a look every 25 ms.

Regular files are always "readable" to select/epoll, so a spool or an inbox
cannot be watched with ``add_reader`` on its own fd. Linux's inotify can: one
inotify fd per held task, watching the task dir for IN_MODIFY, IN_CLOSE_WRITE,
IN_CREATE and IN_MOVED_TO, made non-blocking and watched with ``add_reader``.
Each event names a file; the ``Poke`` for that name is set, and whoever ships
that file wakes. The stdlib has no inotify binding: ``inotify_init1`` and
``inotify_add_watch`` are called through ctypes on libc (imported only when a
task is held, so a drone that never ran one does not pay its ~0.4 MiB).

What this is not: a guarantee. A task can unlink its spool and keep writing to
it (the wrapper's fd still names the old inode; the directory no longer
reports it), flood its dir with events until the queue overflows (then every
poke is set), or replace a file with a FIFO or a symlink (the events only
wake the shipper, which opens what it finds through drone/safefile.py as
before). So every waiter also looks on its own every SAFETY_LOOK seconds, and
where inotify is missing (not Linux, no libc symbol, the per-user instance
limit reached) ``DirWatch.active`` is False and the callers poll at their old
intervals instead. Nothing a task does to its dir can make the reader block:
the fd is non-blocking and each callback reads at most READ_MAX bytes.

The fd is closed by ``close`` (the runner's end): a drone holds thousands of
tasks over its life and must not leak one fd per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("dragoon.drone")

SAFETY_LOOK: Final = 1.0  # seconds: a watched file is looked at this often even with no event
READ_MAX: Final = 64 * 1024  # bytes of events taken per wake-up; the rest waits for the next

IN_MODIFY: Final = 0x00000002
IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_Q_OVERFLOW: Final = 0x00004000
IN_ONLYDIR: Final = 0x01000000
IN_DONT_FOLLOW: Final = 0x02000000
IN_NONBLOCK: Final = os.O_NONBLOCK
IN_CLOEXEC: Final = os.O_CLOEXEC
MASK: Final = (IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ONLYDIR
               | IN_DONT_FOLLOW)
_EVENT: Final = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name

_libc: Any = None
_libc_missing: str | None = None


def _load_libc() -> Any:
    """libc with inotify_init1/inotify_add_watch, or None (the reason kept for the log)."""
    global _libc, _libc_missing
    if _libc is None and _libc_missing is None:
        try:
            import ctypes

            # The symbols of the running process, libc's among them: ctypes.util.find_library
            # would run ldconfig in a subprocess and import tempfile, shutil and subprocess.
            libc = ctypes.CDLL(None, use_errno=True)
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            _libc = libc
        except (ImportError, OSError, AttributeError) as exc:
            _libc_missing = f"no inotify in libc: {exc}"
    return _libc


class Poke:
    """Set when a watched file changed (or the task exited); a waiter clears it and looks."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float) -> None:
        """Return once poked (at once if poked since the last wait) or after ``timeout``."""
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


class DirWatch:
    """Pokes per file name of one directory; ``active`` is False where inotify is missing."""

    def __init__(self, path: Path, names: Iterable[str], *,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.path = path
        self.pokes: dict[str, Poke] = {name: Poke() for name in names}
        self._loop = loop
        self._fd: int | None = None
        self.why_not: str | None = None
        libc = _load_libc()
        if libc is None:
            self.why_not = _libc_missing
            return
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            self.why_not = f"inotify_init1: {os.strerror(_errno(libc))}"
            return
        if libc.inotify_add_watch(fd, os.fsencode(path), MASK) < 0:
            self.why_not = f"inotify_add_watch: {os.strerror(_errno(libc))}"
            os.close(fd)
            return
        self._fd = fd
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)

    @property
    def active(self) -> bool:
        return self._fd is not None

    def poke(self, name: str) -> Poke:
        return self.pokes[name]

    def poke_all(self) -> None:
        for poke in self.pokes.values():
            poke.set()

    def _readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, READ_MAX)
        except BlockingIOError:
            return
        except OSError as exc:  # not expected; fall back to the safety looks rather than spin
            log.warning("inotify on %s failed (%s); looking every %.0f s instead", self.path,
                        exc, SAFETY_LOOK)
            self.close()
            self.poke_all()
            return
        pos = 0
        while pos + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
            name = data[pos + _EVENT.size: pos + _EVENT.size + length].rstrip(b"\0")
            pos += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                self.poke_all()
                continue
            poke = self.pokes.get(name.decode("utf-8", "replace"))
            if poke is not None:
                poke.set()

    def close(self) -> None:
        if self._fd is None:
            return
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = None


def _errno(libc: Any) -> int:
    import ctypes

    return ctypes.get_errno() or errno.EIO
