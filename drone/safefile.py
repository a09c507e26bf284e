"""Opening a path that a task or a pilot can name: regular files only, and never a wait.

One event loop carries every task the drone holds, so a single ``open()``
that waits freezes them all and the drone goes offline. A FIFO with no writer
makes ``open()`` wait forever; a device may read forever (``/dev/zero``) or act
on open (a tape rewinds, a serial line hangs up, a terminal becomes the
drone's controlling tty); a socket cannot be opened at all. So a path is first
opened with ``O_PATH``, which reaches only the inode (no driver, no FIFO
rendezvous), its kind is checked with ``fstat`` on that very inode, and only a
regular file is then opened for real, through ``/proc/self/fd``: the file
checked is the file read, with no gap between the check and the open to swap
it in. Without /proc the path is opened once with ``O_NONBLOCK``, so a FIFO
still returns at once, and the kind is checked on the opened fd.

Reading a regular file can still be slow (a network filesystem, a huge file):
``in_thread`` runs such work on a small pool of its own, so that a hung
filesystem under a fetch root can tie up only fetches and artifact uploads,
never the threads that ship the tasks' output.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

T = TypeVar("T")

_KINDS: Final = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFSOCK: "socket",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFREG: "regular file",
}
_PROC_FD: Final = Path("/proc/self/fd")
FOREIGN_THREADS: Final = 4  # threads for files under fetch roots and work dirs


class NotRegular(OSError):
    """The path names something other than a regular file; the text says what it is."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"not a regular file: {kind}")
        self.kind = kind


def kind(mode: int) -> str:
    """The file type of ``mode`` in the words a pilot reads: ``FIFO``, ``socket``, …."""
    return _KINDS.get(stat.S_IFMT(mode), "unknown file type")


def fd_path(fd: int) -> Path | None:
    """Where the open ``fd`` really is (symlinks resolved by the kernel), or None without /proc."""
    try:
        return Path(os.readlink(_PROC_FD / str(fd)))
    except OSError:
        return None


def open_regular(
    path: str | os.PathLike[str],
    flags: int = os.O_RDONLY,
    *,
    follow: bool = False,
    check_path: Callable[[Path], None] | None = None,
) -> tuple[int, os.stat_result]:
    """An fd on the regular file at ``path`` and its stat; never waits on what it finds there.

    ``follow=False`` refuses a symlink in the last component (a file the drone
    created should not have become one); ``check_path`` is called with the
    real location of what was found, before its kind is looked at, and may
    raise to refuse it (fetch roots, work dirs). Raises ``NotRegular`` for a
    FIFO, device, socket, directory (or symlink when not followed), and the
    usual ``OSError`` (``FileNotFoundError``, …) otherwise.
    """
    nofollow = 0 if follow else os.O_NOFOLLOW
    extra = os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    if _PROC_FD.is_dir():
        probe = os.open(path, os.O_PATH | os.O_CLOEXEC | nofollow)
        try:
            if check_path is not None:
                real = fd_path(probe)
                check_path(real if real is not None else Path(os.path.realpath(path)))
            found = os.fstat(probe)
            if not stat.S_ISREG(found.st_mode):
                raise NotRegular(kind(found.st_mode))
            fd = os.open(_PROC_FD / str(probe), flags | extra)
        finally:
            os.close(probe)
    else:
        try:
            fd = os.open(path, flags | extra | nofollow)
        except OSError as exc:
            if exc.errno == errno.ELOOP and not follow:
                raise NotRegular("symlink") from exc
            raise
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise NotRegular(kind(opened.st_mode))
        if check_path is not None and not _PROC_FD.is_dir():
            check_path(Path(os.path.realpath(path)))
    except BaseException:
        os.close(fd)
        raise
    return fd, opened


_pool: ThreadPoolExecutor | None = None


async def in_thread(func: Callable[..., T], /, *args: object) -> T:
    """``func(*args)`` on the pool for foreign files (fetch roots, work dirs), off the loop."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(FOREIGN_THREADS, thread_name_prefix="dragoon-files")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, functools.partial(func, *args))
