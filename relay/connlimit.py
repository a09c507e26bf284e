"""Connection limits uvicorn does not have: head and body deadlines, write stalls, and caps.

uvicorn closes an idle kept-alive connection (``timeout_keep_alive``) but gives
a connection that has sent part of a request head, or nothing at all, all the
time in the world; a few thousand such slow-loris sockets used to take every
file descriptor the relay had. ``GuardedH11Protocol`` is uvicorn's h11 protocol
with what is missing:

- **Head deadline** (``header_timeout``): from the connection, or from the first
  byte of a later request on a kept-alive one, the whole head must be in within
  the deadline; otherwise 408 and close. Trickling a byte a second does not help.
- **Body progress** (``body_timeout``, ``body_min_rate``): each window of the body
  must finish it or bring ``body_min_rate`` bytes a second. Windows in which the
  relay itself stopped reading (its app is behind) or owes a ``100 Continue`` do
  not count against the peer.
- **Write stall** (``write_timeout``): a peer that takes no byte of an answer for
  that long (a pipelined flood it never reads) is cut off.
- **Caps** (``max_connections_per_peer``, ``max_connections``): checked when the
  connection is made, before a byte is read. Over the per-address cap: an
  immediate 503 and close. At the total cap, the connection that has waited
  longest for a request head (idle, or slow) is closed to make room; only when
  every connection is busy serving a request is the new one refused. So a flood
  of slow connections displaces itself, not the pilots and drones mid-request.

The protocol is h11 whatever is installed (httptools would be picked by
uvicorn's "auto"), because the deadlines read h11's parser state. Accepting
itself (paced, with a TLS handshake deadline) is relay/listener.py's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from dragoon.relay.floodlog import FloodLog
from dragoon.relay.peers import TrustedProxies, peer_key
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    body_min_rate: int
    write_timeout: float
    max_connections: int
    max_per_peer: int  # 0: no per-address cap
    trusted: TrustedProxies


def answer_bytes(status: int, reason: str, code: str, detail: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A whole ``Connection: close`` answer in the relay's error shape, for the raw transport."""
    body = json.dumps({"error": code, "detail": detail}).encode()
    lines = [f"HTTP/1.1 {status} {reason}", "content-type: application/json",
             f"content-length: {len(body)}", "connection: close",
             *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


TOO_MANY_FROM_PEER = answer_bytes(
    503, "Service Unavailable", "too_many_connections",
    "too many connections from your address; close some and retry", (("retry-after", "1"),))
AT_CAPACITY = answer_bytes(
    503, "Service Unavailable", "too_many_connections",
    "the relay is at its connection limit; retry shortly", (("retry-after", "1"),))
HEAD_TIMEOUT = answer_bytes(
    408, "Request Timeout", "request_timeout", "the request head did not arrive in time")
BODY_TIMEOUT = answer_bytes(
    408, "Request Timeout", "request_timeout", "the request body arrived too slowly")


class ConnectionGate:
    """Counts open connections per peer and in total; knows which ones wait for a head."""

    def __init__(self, limits: ConnectionLimits, flood: FloodLog) -> None:
        self.limits = limits
        self.flood = flood
        self.total = 0
        self.per_peer: dict[str, int] = {}
        # Connections waiting for a request head, longest-waiting first: the ones to shed.
        self.waiting: OrderedDict[GuardedH11Protocol, None] = OrderedDict()

    def admit(self, connection: GuardedH11Protocol, host: str) -> bytes | None:
        """None to let ``connection`` in (and count it), else the refusal to send."""
        key = peer_key(host)
        if self.limits.max_per_peer and host not in self.limits.trusted:
            open_now = self.per_peer.get(key, 0)
            if open_now >= self.limits.max_per_peer:
                self.flood.warn("connection refused",
                                f"refused a connection from {key}: {open_now} already open "
                                "(max_connections_per_peer)")
                return TOO_MANY_FROM_PEER
        if self.total >= self.limits.max_connections:
            if not self.waiting:
                self.flood.warn("connection refused",
                                f"refused a connection from {key}: all {self.total} "
                                "connections are serving requests (max_connections)")
                return AT_CAPACITY
            oldest = next(iter(self.waiting))
            oldest.shed()
            self.flood.warn("connection shed",
                            f"at {self.limits.max_connections} connections (max_connections): "
                            "closed the one that waited longest for a request")
        connection.peer_key = key
        self.total += 1
        self.per_peer[key] = self.per_peer.get(key, 0) + 1
        return None

    def release(self, connection: GuardedH11Protocol) -> None:
        self.waiting.pop(connection, None)
        self.total -= 1
        left = self.per_peer.get(connection.peer_key, 1) - 1
        if left > 0:
            self.per_peer[connection.peer_key] = left
        else:
            self.per_peer.pop(connection.peer_key, None)

    def set_waiting(self, connection: GuardedH11Protocol, waiting: bool) -> None:
        if waiting:
            self.waiting[connection] = None
            self.waiting.move_to_end(connection)
        else:
            self.waiting.pop(connection, None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus the deadlines and caps of this module."""

    gate: ClassVar[ConnectionGate]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer_key = ""
        self._admitted = False
        self._released = False
        self._bytes_in = 0
        self._idle_mark = 0  # bytes received when the connection began waiting for a head
        self._window_mark = 0  # bytes received when the current body window opened
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refusal = self.gate.admit(self, host)
        if refusal is not None:
            self.transport = transport
            transport.write(refusal)
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._begin_waiting()
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        self._bytes_in += len(data)
        super().data_received(data)
        self._after_input()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._release()
        self._cancel_timers()
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self._admitted:
            super().eof_received()

    def pause_writing(self) -> None:
        if not self._admitted:
            return
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(
                self.gate.limits.write_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        if not self._admitted:
            return
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    # -- uvicorn hooks --------------------------------------------------------------------

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            # Kept alive: uvicorn's keep-alive timer runs; until a new head begins, this
            # connection is idle, the first kind to give way at the total cap.
            self._begin_waiting()
        else:
            self._after_input()

    def shutdown(self) -> None:
        if self._admitted:
            super().shutdown()

    # -- the limits -----------------------------------------------------------------------

    def shed(self) -> None:
        """Closed to make room at the total cap (only ever a connection waiting for a head)."""
        self._release()
        self._cancel_timers()
        self.transport.close()

    def _after_input(self) -> None:
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            self._arm_head_timer()  # a head has begun (or not): its deadline runs from now
            return
        self.gate.set_waiting(self, False)
        self._cancel(self._head_timer)
        self._head_timer = None
        if state is h11.SEND_BODY:
            if self._body_timer is None:
                self._open_body_window()
        else:
            self._cancel(self._body_timer)
            self._body_timer = None

    def _begin_waiting(self) -> None:
        self._idle_mark = self._bytes_in
        self.gate.set_waiting(self, True)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.gate.limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._bytes_in > self._idle_mark:
            self.transport.write(HEAD_TIMEOUT)  # a head had begun: say why it is closed
        self.transport.close()

    def _open_body_window(self) -> None:
        self._window_mark = self._bytes_in
        self._body_timer = self.loop.call_later(self.gate.limits.body_timeout, self._body_check)

    def _body_check(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        limits = self.gate.limits
        relay_behind = (self.flow is not None and self.flow.read_paused) or (
            self.cycle is not None and self.cycle.waiting_for_100_continue)
        brought = self._bytes_in - self._window_mark
        # At least one byte a window, even with body_min_rate = 0.
        needed = max(1.0, limits.body_min_rate * limits.body_timeout)
        if not relay_behind and brought < needed:
            self.gate.flood.warn("slow body", f"closed a connection from {self.peer_key}: "
                                 f"{brought} body bytes in {limits.body_timeout:.0f} s")
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(BODY_TIMEOUT)
            self.transport.close()
            return
        self._open_body_window()

    def _write_stalled(self) -> None:
        self._write_timer = None
        self.gate.flood.warn("write stalled", f"cut off {self.peer_key}: it read no answer "
                             f"for {self.gate.limits.write_timeout:.0f} s")
        # A reset, not a close: a close would leave what it never read queued in the kernel
        # for minutes, on a socket no process owns any more.
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self.gate.release(self)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._write_timer):
            self._cancel(timer)
        self._head_timer = self._body_timer = self._write_timer = None

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def protocol_class(gate: ConnectionGate) -> type[GuardedH11Protocol]:
    """The protocol class to hand uvicorn (``Config(http=…)``), bound to one gate."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"gate": gate})
