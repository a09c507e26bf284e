"""Hang up a streamed response that another thread is blocked reading.

Closing an httpx client does not wake a thread blocked in ``recv`` on one of its
connections: that read ends only when the server next writes (an SSE keepalive, 15 s
away) or when a join gives up. Shutting the socket down wakes it at once with an end of
stream, as a cockpit that quits drops its connection.
"""

from __future__ import annotations

import contextlib
import socket

import httpx


def hang_up(response: httpx.Response | None) -> None:
    """End ``response``'s connection now, whichever thread is reading it."""
    if response is None:
        return
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
