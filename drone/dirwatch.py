"""Waking a task's shippers when its task dir changes: inotify, not a look every 25 ms.

Regular files are always "readable" to select/epoll, so a spool or an inbox
cannot be watched with ``add_reader`` on its own fd. Linux's inotify can: the
drone keeps one non-blocking inotify fd (``_Hub``), watched with
``add_reader`` while any task dir is watched, and each running task adds a
watch on its task dir for IN_MODIFY, IN_CLOSE_WRITE, IN_CREATE and
IN_MOVED_TO. Each event names a file; the ``Poke`` for that name is set, and
whoever ships that file wakes. The stdlib has no inotify binding:
``inotify_init1``, ``inotify_add_watch`` and ``inotify_rm_watch`` are called
through ctypes on libc (imported only when a task is held, so a drone that
never ran one does not pay its ~0.4 MiB).

One fd for the drone, not one per task: closing an inotify fd that had a
watch waits in the kernel for an RCU grace period (~16 ms measured here), on
the event loop, for every task; removing a watch takes microseconds. And an
instance per task would spend the user's few inotify instances
(``fs.inotify.max_user_instances``, often 128); watches are plentiful.

What this is not: a guarantee. A task can unlink its spool and keep writing to
it (the wrapper's fd still names the old inode; the directory no longer
reports it), flood its dir with events until the queue overflows (then every
poke is set), or replace a file with a FIFO or a symlink (the events only
wake the shipper, which opens what it finds through drone/safefile.py as
before). So while the watch is active it pokes every waiter together every
SAFETY_LOOK seconds (one wake-up a second for the whole task, not one per
waiter; each waiter keeps a BACKSTOP timeout of its own for after the watch
is closed), and where inotify is missing (not Linux, no libc symbol, the
user's instance or watch limit reached) ``DirWatch.active`` is False and the
callers poll at their old intervals instead. Nothing a task does to its dir
can make the reader block: the fd is non-blocking and each callback reads at
most READ_MAX bytes.

The watch is removed by ``close`` (at the task's exit, and again at the
runner's end): a drone holds thousands of tasks over its life and must leave
no watch behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("dragoon.drone")

SAFETY_LOOK: Final = 1.0  # seconds: a watched file is looked at this often even with no event
BACKSTOP: Final = 5.0  # seconds a waiter waits at most on its own where the watch pokes it
READ_MAX: Final = 64 * 1024  # bytes of events taken per wake-up; the rest waits for the next

IN_MODIFY: Final = 0x00000002
IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
IN_ONLYDIR: Final = 0x01000000
IN_DONT_FOLLOW: Final = 0x02000000
MASK: Final = (IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ONLYDIR
               | IN_DONT_FOLLOW)
_EVENT: Final = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


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


class _Hub:
    """The drone's one inotify fd: watch descriptors → the DirWatches that asked for them."""

    def __init__(self, libc: Any, fd: int) -> None:
        self.libc = libc
        self.fd = fd
        self.loop: asyncio.AbstractEventLoop | None = None
        self.owners: dict[int, list[DirWatch]] = {}

    def add(self, watch: DirWatch, loop: asyncio.AbstractEventLoop) -> int | str:
        """The watch descriptor for ``watch.path``, or why there is none."""
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(watch.path), MASK)
        if wd < 0:
            return f"inotify_add_watch: {os.strerror(_errno())}"
        if self.loop is not loop:
            self._detach()
            loop.add_reader(self.fd, self._readable)
            self.loop = loop
        # The same directory twice gets the same descriptor: removed only with its last owner.
        self.owners.setdefault(wd, []).append(watch)
        return int(wd)

    def remove(self, watch: DirWatch, wd: int) -> None:
        owners = self.owners.get(wd, [])
        if watch in owners:
            owners.remove(watch)
        if not owners:
            self.owners.pop(wd, None)
            self.libc.inotify_rm_watch(self.fd, wd)  # EINVAL if the dir is gone: fine
        if not self.owners:
            self._detach()  # nothing watched: the loop does not even look at the fd

    def _detach(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.fd)
        self.loop = None

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, READ_MAX)
        except BlockingIOError:
            return
        except OSError as exc:  # not expected; every waiter falls back to its own looks
            log.warning("inotify read failed (%s); task files are looked at every %.0f s",
                        exc, BACKSTOP)
            for owners in list(self.owners.values()):
                for watch in owners:
                    watch.poke_all()
            self._detach()
            return
        pos = 0
        while pos + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
            name = data[pos + _EVENT.size: pos + _EVENT.size + length].rstrip(b"\0")
            pos += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                for owners in list(self.owners.values()):
                    for watch in owners:
                        watch.poke_all()
                continue
            if mask & IN_IGNORED:
                continue
            text = name.decode("utf-8", "replace")
            for watch in self.owners.get(wd, ()):
                poke = watch.pokes.get(text)
                if poke is not None:
                    poke.set()


_hub: _Hub | None = None
_hub_missing: str | None = None


def _get_hub() -> _Hub | None:
    """The drone's inotify instance, made on first use; None (reason kept) where there is none."""
    global _hub, _hub_missing
    if _hub is None and _hub_missing is None:
        try:
            import ctypes

            # The symbols of the running process, libc's among them: ctypes.util.find_library
            # would run ldconfig in a subprocess and import tempfile, shutil and subprocess.
            libc = ctypes.CDLL(None, use_errno=True)
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        except (ImportError, OSError, AttributeError) as exc:
            _hub_missing = f"no inotify in libc: {exc}"
            return None
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            # Not kept as final: the instance limit may free up for a later task.
            return None
        _hub = _Hub(libc, fd)
    return _hub


def _errno() -> int:
    import ctypes

    return ctypes.get_errno() or 5  # EIO


class DirWatch:
    """Pokes per file name of one directory; ``active`` is False where inotify is missing."""

    def __init__(self, path: Path, names: Iterable[str], *,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.path = path
        self.pokes: dict[str, Poke] = {name: Poke() for name in names}
        self._hub: _Hub | None = None
        self._wd: int | None = None
        self._loop = loop
        self._safety: asyncio.TimerHandle | None = None
        self.why_not: str | None = None
        hub = _get_hub()
        if hub is None:
            self.why_not = _hub_missing or f"inotify_init1: {os.strerror(_errno())}"
            return
        self._loop = loop or asyncio.get_running_loop()
        found = hub.add(self, self._loop)
        if isinstance(found, str):
            self.why_not = found
            return
        self._hub, self._wd = hub, found
        self._safety = self._loop.call_later(SAFETY_LOOK, self._safety_look)

    @property
    def active(self) -> bool:
        return self._wd is not None

    def poke(self, name: str) -> Poke:
        return self.pokes[name]

    def poke_all(self) -> None:
        for poke in self.pokes.values():
            poke.set()

    def _safety_look(self) -> None:
        self._safety = None
        if self._wd is None or self._loop is None:
            return
        self.poke_all()
        self._safety = self._loop.call_later(SAFETY_LOOK, self._safety_look)

    def close(self) -> None:
        """Stop watching (idempotent); the pokes stay usable, set only by hand from now on."""
        if self._safety is not None:
            self._safety.cancel()
            self._safety = None
        if self._hub is not None and self._wd is not None:
            self._hub.remove(self, self._wd)
        self._hub = self._wd = None


def watches_held() -> int:
    """Task dirs the drone's inotify instance watches now (0 where there is none)."""
    return len(_hub.owners) if _hub is not None else 0
