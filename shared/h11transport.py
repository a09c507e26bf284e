"""An httpx transport on h11 over a plain asyncio protocol, for the relay links.

Why: a tiny task puts about six requests in a row on its critical path, and
each costs the drone and the pilot CPU. Measured against the real relay on a
2-core box, a GET /healthz round trip costs p50 1.57 ms through httpx's default
transport (httpx → httpcore → anyio), 1.27 ms through bare httpcore and 0.80 ms
through h11 driven directly over asyncio streams. This transport is the last kind:
httpx's API (``Request``/``Response``, ``client.stream``, ``aiter_lines``…)
stays everywhere above it; only the layers under it go. h11 is the sans-IO
HTTP/1.1 parser httpcore itself uses.

The rules, each httpcore's unless said:

* One connection per request in flight; idle ones are kept per (scheme, host,
  port), at most ``max_keepalive`` of them, for ``keepalive_expiry`` seconds
  (less than the relay's default keep-alive of 5 s, so that we drop an idle
  connection before the relay does, not as it does).
* Before an idle connection is reused it is checked: closed, at EOF, holding
  unread bytes, or with a readable socket (an idle HTTP/1.1 socket that is
  readable can only be about to say EOF) — any of these and it is closed.
* No request is retried, as in httpcore. A retry is safe only when nothing of
  the request can have reached the relay, and once a byte is written that is
  unknowable: a reset after it may come from a relay that read the request and
  died, or from a network drop after the relay read it. A signed request that
  reached the relay is refused on a second sending as a replayed nonce (the
  first version of this transport retried GETs and tests/cli/test_run.py's
  dropping proxy turned that into "this nonce was already used"). The one
  provably safe case, the connection found dead before the first byte, is the
  idle check above: it runs in the same event-loop step as the first write.
  The callers already retry with fresh signatures (drone: RelayUnavailable;
  pilot: its backoff), which is the right layer.
* A write error while sending is swallowed and the response read, as
  httpcore does: the relay may answer (401, 413) before it reads a body.
* A response closed before its end closes its connection; so does any error
  or cancellation on the way.
* Timeouts are ``request.extensions["timeout"]`` (connect/read/write/pool, as
  httpx builds it) and raise httpx's exceptions (ConnectTimeout, ReadTimeout,
  ConnectError, ReadError, WriteError, RemoteProtocolError, PoolTimeout), with
  the original error as ``__cause__`` so shared/tls.is_tls_failure still sees it.

No proxies: ``direct_transport`` gives None when one is configured, and the
clients then keep httpx's default transport, which handles them.
"""

from __future__ import annotations

import asyncio
import os
import select
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx

_READ = 64 * 1024
_Key = tuple[str, str, int]
FALLBACK_VARIABLE = "DRAGOON_HTTP_TRANSPORT"


def direct_transport(ssl_context: ssl.SSLContext, *, max_connections: int = 32,
                     max_keepalive: int = 8) -> H11Transport | None:
    """This transport, or None when httpx would send through a proxy.

    httpx (``trust_env``, its default) reads the proxy settings with
    ``urllib.request.getproxies()``; when any HTTP, HTTPS or ALL proxy is set,
    the client keeps httpx's own transport so that proxying (and NO_PROXY) is
    exactly as before. A NO_PROXY that covers the relay then costs only speed.
    ``DRAGOON_HTTP_TRANSPORT=httpx`` in the environment also keeps httpx's own:
    a way back should this transport misbehave somewhere, and the "before" of
    bench/bench_transport.py.
    """
    if os.environ.get(FALLBACK_VARIABLE) == "httpx":
        return None
    proxies = urllib.request.getproxies()
    if any(proxies.get(scheme) for scheme in ("http", "https", "all")):
        return None
    return H11Transport(ssl_context, max_connections=max_connections,
                        max_keepalive=max_keepalive)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and its h11 state machine.

    An asyncio protocol of its own rather than a StreamReader: a StreamReader raises a
    connection's error before the bytes it holds, and an early answer (the relay's 401 to
    an upload it did not read) arrives just before the reset that the rest of the upload
    provokes.
    """

    def __init__(self) -> None:
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.lost = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > 4 * _READ and self.transport is not None:
            self.transport.pause_reading()  # the body's reader is slower than the network
            self._reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.lost = True
        self.error = exc  # None: a clean close
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- used by the transport ---

    async def read(self) -> bytes:
        """What has come, b"" at EOF; the connection's error only once its bytes are read."""
        while not self.buffer and not self.eof:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            if self._reading_paused and self.transport is not None:
                self._reading_paused = False
                self.transport.resume_reading()
            return data
        if self.error is not None:
            raise self.error
        return b""

    def write(self, data: bytes) -> None:
        if self.lost or self.transport is None or self.transport.is_closing():
            raise BrokenPipeError("the connection is closed")
        self.transport.write(data)

    @property
    def must_drain(self) -> bool:
        return self._drained is not None

    async def drain(self) -> None:
        if self._drained is not None:
            await self._drained
        if self.lost:
            raise BrokenPipeError("the connection is closed")

    def usable(self, expiry: float) -> bool:
        """Whether an idle connection may carry the next request (see the module's rules)."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.eof or self.buffer:
            return False
        if time.monotonic() - self.idle_since > expiry:
            return False
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class H11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive to any origin, TLS through ``ssl_context``."""

    def __init__(self, ssl_context: ssl.SSLContext, *, max_connections: int = 32,
                 max_keepalive: int = 8, keepalive_expiry: float = 4.0) -> None:
        self.ssl_context = ssl_context
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive
        self._expiry = keepalive_expiry
        self._idle: dict[_Key, list[_Connection]] = {}
        self._slots: dict[_Key, asyncio.Semaphore] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"no {scheme!r} here", request=request)
        key = (scheme, url.raw_host.decode("ascii"), url.port or (443 if scheme == "https" else 80))
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = asyncio.Semaphore(self._max_connections)
        if slot.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await slot.acquire()
            except TimeoutError as exc:
                raise httpx.PoolTimeout("no connection free in time", request=request) from exc
        else:
            await slot.acquire()
        try:
            body = request.content if isinstance(request.stream, httpx.ByteStream) else None
        except httpx.RequestNotRead:
            body = None
        connection: _Connection | None = None
        try:
            connection = self._idle_connection(key)
            if connection is None:
                connection = await self._connect(key, request, timeouts.get("connect"))
            response = await self._exchange(connection, request, body, timeouts)
            stream = _ResponseStream(self, key, slot, connection, request, timeouts.get("read"))
            return httpx.Response(
                response.status_code, headers=response.headers.raw_items(), stream=stream,
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason},
            )
        except BaseException:
            if connection is not None:
                self._discard(connection)
            slot.release()
            raise

    def _idle_connection(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.usable(self._expiry):
                return connection
            self._discard(connection)
        return None

    async def _connect(self, key: _Key, request: httpx.Request,
                       timeout: float | None) -> _Connection:
        scheme, host, port = key
        tls = self.ssl_context if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                _, connection = await asyncio.get_running_loop().create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout("connect timed out", request=request) from exc
        except (OSError, ssl.SSLError, ssl.CertificateError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        self._open.add(connection)
        return connection

    async def _exchange(self, connection: _Connection, request: httpx.Request,
                        body: bytes | None, timeouts: dict[str, float | None]) -> h11.Response:
        """Send the request, read up to the response's head (skipping any 1xx)."""
        state = connection.h11
        head = h11.Request(method=request.method, target=request.url.raw_path,
                           headers=request.headers.raw)
        try:
            write_timeout = timeouts.get("write")
            try:
                if body is not None:  # all in one write: one segment for a small request
                    out = state.send(head)
                    if body:
                        out += state.send(h11.Data(data=body))
                    out += state.send(h11.EndOfMessage())
                    await self._write(connection, out, write_timeout, request)
                else:
                    await self._write(connection, state.send(head), write_timeout, request)
                    async for chunk in request.stream:  # type: ignore[union-attr]
                        if chunk:
                            await self._write(connection, state.send(h11.Data(data=chunk)),
                                              write_timeout, request)
                    await self._write(connection, state.send(h11.EndOfMessage()),
                                      write_timeout, request)
            except httpx.WriteError:
                pass  # the relay may have answered already and closed: read what it said
            while True:
                event = await _next_event(connection, request, timeouts.get("read"))
                if isinstance(event, h11.Response):
                    return event
                if not isinstance(event, h11.InformationalResponse):
                    raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__}",
                                                    request=request)
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from exc

    @staticmethod
    async def _write(connection: _Connection, data: bytes, timeout: float | None,
                     request: httpx.Request) -> None:
        try:
            connection.write(data)
            if connection.must_drain:
                async with asyncio.timeout(timeout):
                    await connection.drain()
        except TimeoutError as exc:
            raise httpx.WriteTimeout("write timed out", request=request) from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc

    def _release(self, key: _Key, connection: _Connection) -> None:
        """Back to the pool after a complete exchange, when both sides keep it alive."""
        state = connection.h11
        if (not self._closed and state.our_state is h11.DONE and state.their_state is h11.DONE
                and not connection.eof and not state.trailing_data[0]):  # nothing past the end
            state.start_next_cycle()
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._max_keepalive:
                connection.idle_since = time.monotonic()
                idle.append(connection)
                return
        self._discard(connection)

    def _discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.close()

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._open):
            self._discard(connection)
        self._idle.clear()


async def _next_event(connection: _Connection, request: httpx.Request,
                      timeout: float | None) -> Any:
    state = connection.h11
    while True:
        try:
            event = state.next_event()
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        if event is not h11.NEED_DATA:
            return event
        try:
            async with asyncio.timeout(timeout):
                data = await connection.read()
        except TimeoutError as exc:
            raise httpx.ReadTimeout("read timed out", request=request) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        if not data and state.their_state is h11.SEND_RESPONSE:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                            request=request)
        state.receive_data(data)


class _ResponseStream(httpx.AsyncByteStream):
    """A response body read off its connection; the connection goes back only once read whole."""

    def __init__(self, transport: H11Transport, key: _Key, slot: asyncio.Semaphore,
                 connection: _Connection, request: httpx.Request,
                 read_timeout: float | None) -> None:
        self._transport = transport
        self._key = key
        self._slot = slot
        self._connection: _Connection | None = connection
        self._request = request
        self._timeout = read_timeout
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx.StreamClosed()
        try:
            while True:
                event = await _next_event(connection, self._request, self._timeout)
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._complete = True
                    break
                else:
                    raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__}",
                                                    request=self._request)
        except BaseException:
            await self.aclose()
            raise
        if self._complete:
            await self.aclose()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._complete:
            self._transport._release(self._key, connection)
        else:
            self._transport._discard(connection)
        self._slot.release()
