"""Learning that a task's wrapper exited the moment it does: a pidfd, not a look every tick.

The wrapper (drone/wrapper.py) writes ``exit.json`` atomically and then exits,
so its exit is the moment the task's end is known. On Linux ≥ 5.3,
``os.pidfd_open`` gives an fd that becomes readable when the process exits,
whoever its parent is: it works for the wrapper the drone launched (its child)
and for one a restarted drone re-adopted (no longer its child; nothing else
could tell it of the exit). The loop watches that fd with ``add_reader``, so a
drone that holds a running task sleeps until it ends.

A pid alone can name a recycled process. So the caller's identity check (pid
*and* start time, spawn.wrapper_alive) runs *after* the pidfd is open: the fd
pins the process it was opened on, and if that is not (or no longer) the
wrapper, the exit is reported at once rather than watched on a stranger.

Where pidfd is missing (an older kernel, another OS, a seccomp filter that
refuses the syscall), the same identity check runs every FALLBACK_EVERY
seconds instead: slower to notice, but nothing else can signal the exit of a
process that is not the drone's child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Final

log = logging.getLogger("dragoon.drone")

FALLBACK_EVERY: Final = 0.5  # seconds between looks where no pidfd can be had


def pidfd_supported() -> bool:
    """Whether this process can open pidfds (tried on itself, once)."""
    global _supported
    if _supported is None:
        try:
            fd = os.pidfd_open(os.getpid())
        except (AttributeError, OSError):
            _supported = False
        else:
            os.close(fd)
            _supported = True
    return _supported


_supported: bool | None = None


class ExitWatch:
    """Calls ``on_exit`` once, soon after process ``pid`` exits (or is found not to be ours).

    ``alive`` says whether ``pid`` is still the process meant (pid and start
    time); it is asked once the pidfd is open, and at every look of the fallback.
    ``close`` stops watching without calling back; closing twice is harmless.
    """

    def __init__(self, pid: int, alive: Callable[[], bool], on_exit: Callable[[], None],
                 *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.pid = pid
        self._alive = alive
        self._on_exit = on_exit
        self._loop = loop or asyncio.get_running_loop()
        self._fd: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.how = "pidfd"
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._loop.call_soon(self._fire)  # gone (and reaped) already
            return
        except (AttributeError, OSError) as exc:
            self.how = "poll"
            log.debug("no pidfd for pid %d (%s); looking every %.1f s", pid, exc,
                      FALLBACK_EVERY)
            self._timer = self._loop.call_later(FALLBACK_EVERY, self._look)
            return
        if not alive():  # the pid named someone else, or a zombie: the wrapper has exited
            self._loop.call_soon(self._fire)
            return
        self._loop.add_reader(self._fd, self._fire)

    @property
    def closed(self) -> bool:
        return self._closed

    def _look(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self._alive():
            self._timer = self._loop.call_later(FALLBACK_EVERY, self._look)
        else:
            self._fire()

    def _fire(self) -> None:
        if self._closed:
            return
        self.close()
        self._on_exit()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
