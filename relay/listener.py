"""Accepting connections: a listening socket that paces asyncio's accept loop, and a TLS
handshake deadline, both for relay/connlimit.py's caps and deadlines to hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator
from typing import Any, ClassVar

from dragoon.relay.floodlog import RESOURCE_ERRNOS


class GatedListener(socket.socket):
    """The listening socket, pacing asyncio's accept loop so the caps can keep up.

    asyncio accepts up to a whole backlog (2,048) of sockets in one loop tick, each a
    file descriptor, before any protocol (and so the gate) sees one: a flood would
    overrun the descriptor reserve that ``max_connections`` leaves. So ``accept()`` takes
    at most ``ACCEPTS_PER_TICK`` a tick, the rest waiting in the kernel's backlog.

    And when descriptors do run out, CPython 3.11's accept loop reports the failure and
    schedules one more retry for *every* remaining slot of the batch, so the retries
    multiply each second (tens of thousands a second, each once a traceback). After one
    such failure this socket says "nothing to accept" until the next tick, leaving
    asyncio's single retry a second later.
    """

    ACCEPTS_PER_TICK: ClassVar[int] = 64
    _taken = 0
    _resting = False

    def accept(self) -> tuple[socket.socket, Any]:
        if self._resting or self._taken >= self.ACCEPTS_PER_TICK:
            raise BlockingIOError(errno.EAGAIN, "accepting paused until the next loop tick")
        try:
            accepted = super().accept()
        except OSError as exc:
            if exc.errno in RESOURCE_ERRNOS:
                self._resting = True
                self._next_tick()
            raise
        self._taken += 1
        if self._taken == 1:
            self._next_tick()
        return accepted

    def _next_tick(self) -> None:
        try:
            asyncio.get_running_loop().call_soon(self._reset)
        except RuntimeError:  # accept() called outside a loop: no pacing to undo
            self._reset()

    def _reset(self) -> None:
        self._taken = 0
        self._resting = False


@contextlib.contextmanager
def tls_handshake_deadline(loop: asyncio.AbstractEventLoop, seconds: float) -> Iterator[None]:
    """TLS handshakes get ``seconds`` (asyncio's default is 60) in servers made meanwhile.

    A TLS connection reaches the protocol, and so the deadlines above, only once its
    handshake is done; a handshake left hanging holds a descriptor until asyncio gives
    up. uvicorn passes no handshake timeout to ``create_server``, so this supplies one
    to the calls its startup makes, then takes itself away.
    """
    original = loop.create_server

    async def create_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", seconds)
        return await original(*args, **kwargs)

    try:
        loop.create_server = create_server  # type: ignore[method-assign]
    except AttributeError:  # a loop whose methods cannot be replaced: keep its default
        yield
        return
    try:
        yield
    finally:
        del loop.create_server
