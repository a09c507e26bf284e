"""Log lines a flood cannot multiply: at most one a second per kind, with a count of the rest.

An attacker decides how often a refusal or a failed ``accept()`` happens, so a
line per occurrence hands them the disk (an unthrottled relay wrote 235 MB of
tracebacks in a minute). Each kind of message is written at once the first
time, then summed up: "N more suppressed" at the end of the second.

``install_accept_error_handler`` routes asyncio's "socket.accept() out of
system resource" reports (EMFILE, ENFILE, ENOBUFS, ENOMEM; asyncio reports
one per pending connection, with a traceback) through such a log; anything
else goes to the loop's default handler unchanged.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

log = logging.getLogger("dragoon.relay.net")

RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass
class _Window:
    opened: float
    suppressed: int = 0
    flush_scheduled: bool = False


class FloodLog:
    """``warn(kind, text)`` writes at most one line per ``interval`` for each ``kind``."""

    def __init__(self, logger: logging.Logger = log, *, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 later: Callable[[float, Callable[[], None]], Any] | None = None) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._later = later
        self._windows: dict[str, _Window] = {}

    def warn(self, kind: str, text: str) -> None:
        now = self._clock()
        window = self._windows.get(kind)
        if window is None or now - window.opened >= self._interval:
            if window is not None and window.suppressed:
                self._summary(kind, window)
            self._windows[kind] = _Window(opened=now)
            self._log.warning("%s", text)
            return
        window.suppressed += 1
        if not window.flush_scheduled:
            window.flush_scheduled = True
            later = self._later or _loop_later
            later(self._interval - (now - window.opened), lambda: self.flush(kind))

    def flush(self, kind: str) -> None:
        """Write the count suppressed in ``kind``'s window, if any (called at its end)."""
        window = self._windows.get(kind)
        if window is not None and window.suppressed:
            self._summary(kind, window)
            window.suppressed = 0
        if window is not None:
            window.flush_scheduled = False

    def _summary(self, kind: str, window: _Window) -> None:
        self._log.warning("%s: %d more suppressed in the last %.0f s", kind, window.suppressed,
                          self._interval)


def _loop_later(delay: float, callback: Callable[[], None]) -> None:
    try:
        asyncio.get_running_loop().call_later(max(delay, 0.0), callback)
    except RuntimeError:  # no loop (a unit test calling from a thread): flush at the next warn
        return


def is_accept_resource_error(context: dict[str, Any]) -> bool:
    exc = context.get("exception")
    return (isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS
            and "accept" in str(context.get("message", "")))


def install_accept_error_handler(loop: asyncio.AbstractEventLoop, flood: FloodLog) -> None:
    """Failed accepts become one throttled line (no traceback); the rest is left as it was."""
    previous = loop.get_exception_handler()

    def handler(the_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if is_accept_resource_error(context):
            exc = context["exception"]
            flood.warn("accept failed",
                       f"accept failed: {exc.strerror or exc} (errno {exc.errno}); "
                       "new connections wait until descriptors free up")
            return
        if previous is not None:
            previous(the_loop, context)
        else:
            the_loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
