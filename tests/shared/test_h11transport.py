"""shared/h11transport.py against real servers: a uvicorn app of its own (in a thread, for the
edge cases: streamed bodies, a body cut short, a slow answer, a short keep-alive) and the
relay itself (tests/support/relay.py)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from dragoon.shared.h11transport import H11Transport, _Connection, direct_transport
from dragoon.shared.tls import ca_context, is_tls_failure, plain_http_context

from tests.support.relay import RelayProcess, wait_until
from tests.support.tls import self_signed_certificate

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The test server: each path one behaviour."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    peer = str(scope["client"][1]).encode()  # the client's port: which connection it came on

    async def answer(status: int, body: bytes,
                     headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"x-peer", peer), *headers]})
        await send({"type": "http.response.body", "body": body})

    if path == "/hello":
        await answer(200, b"hello")
    elif path == "/echo":  # the body's length and hash, read as it streams in
        digest, size, more = hashlib.sha256(), 0, True
        while more:
            message = await receive()
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await answer(200, f"{size} {digest.hexdigest()}".encode())
    elif path == "/early":  # answers without reading the (large) body
        await answer(401, b"no", ((b"connection", b"close"),))
    elif path == "/chunks":  # chunked transfer encoding, one line per chunk
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-peer", peer), (b"content-type", b"text/plain")]})
        for index in range(50):
            await send({"type": "http.response.body", "body": f"line {index}\n".encode(),
                        "more_body": True})
            await asyncio.sleep(0.001)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/cut":  # says 1000 bytes, sends 10, then dies
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"1000")]})
        await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
        raise RuntimeError("cut mid-body, on purpose")
    elif path == "/slow":
        await asyncio.sleep(2)
        await answer(200, b"late")
    else:
        await answer(404, b"")


class Server:
    """uvicorn serving ``app`` on a loopback port of its own, in a thread."""

    def __init__(self, *, keep_alive: float = 5.0, tls: tuple[Path, Path] | None = None) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        port = self.socket.getsockname()[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"
        config = uvicorn.Config(app, log_level="critical", timeout_keep_alive=keep_alive,
                                lifespan="off", ssl_certfile=tls and str(tls[0]),
                                ssl_keyfile=tls and str(tls[1]))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.socket]}, daemon=True)

    def open_connections(self) -> int:
        return len(self.server.server_state.connections)

    def __enter__(self) -> Server:
        self.thread.start()
        wait_until(lambda: self.server.started, message="uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


def client(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=H11Transport(plain_http_context(), **kwargs))


def run(coroutine: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coroutine
    return asyncio.run(main())


def test_keep_alive_reuses_one_connection_and_concurrent_requests_get_their_own(
        server: Server) -> None:
    async def go() -> None:
        async with client() as http:
            peers = {(await http.get(server.url + "/hello")).headers["x-peer"]
                     for _ in range(5)}
            assert len(peers) == 1
            answers = await asyncio.gather(*(http.get(server.url + "/slow", timeout=5)
                                             for _ in range(3)))
            assert len({answer.headers["x-peer"] for answer in answers}) == 3
            head = await http.head(server.url + "/hello")
            assert head.status_code == 200 and head.content == b""
            assert (await http.get(server.url + "/hello")).text == "hello"  # after HEAD, same
    run(go())


def test_an_idle_connection_the_server_closed_is_not_reused(tmp_path: Path) -> None:
    with Server(keep_alive=0.3) as short:
        async def go() -> None:
            async with client() as http:
                first = await http.get(short.url + "/hello")
                await asyncio.to_thread(wait_until, lambda: short.open_connections() == 0,
                                        message="uvicorn to close the idle connection")
                second = await http.get(short.url + "/hello")
                assert second.status_code == 200
                assert second.headers["x-peer"] != first.headers["x-peer"]
        run(go())


def test_a_dead_reused_connection_fails_its_request_and_is_not_retried(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the idle check cannot close (the server closing as we send), forced: the check
    is made to pass on a connection the server has closed. The request fails with httpx's
    error, for the caller to retry with a fresh signature (a resent signed request that had
    reached the relay would be refused as a replayed nonce), and the next request works."""
    monkeypatch.setattr(_Connection, "usable", lambda self, expiry: True)

    async def go() -> None:
        with Server(keep_alive=0.2) as short:
            async with client() as http:
                for method in ("GET", "POST"):
                    await http.get(short.url + "/hello")
                    await asyncio.to_thread(wait_until, lambda: short.open_connections() == 0,
                                            message="uvicorn to close the idle connection")
                    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                        await http.request(method, short.url + "/echo", content=b"")
                assert (await http.get(short.url + "/hello")).text == "hello"
    run(go())


def test_request_bodies_stream_out_and_responses_stream_in(server: Server) -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(blob), 100_000):
            yield blob[start:start + 100_000]

    async def go() -> None:
        async with client() as http:
            expected = f"{len(blob)} {hashlib.sha256(blob).hexdigest()}"
            chunked = await http.post(server.url + "/echo", content=chunks())
            assert chunked.text == expected
            sized = await http.post(server.url + "/echo", content=chunks(),
                                    headers={"Content-Length": str(len(blob))})
            assert sized.text == expected
            async with http.stream("GET", server.url + "/chunks") as response:
                lines = [line async for line in response.aiter_lines()]
            assert lines == [f"line {index}" for index in range(50)]
            # An answer before the body was read, and the connection closed after it.
            early = await http.post(server.url + "/early", content=blob[:1000])
            assert early.status_code == 401
            try:  # a body too big for the buffers: the write fails, the answer is read if
                # the kernel kept it (the reset the rest of the body provokes may drop it,
                # for httpx's own transport alike)
                early = await http.post(server.url + "/early", content=chunks())
                assert early.status_code == 401
            except httpx.ReadError:
                pass
    run(go())


def test_a_response_closed_mid_stream_closes_its_connection(server: Server) -> None:
    async def go() -> None:
        async with client() as http:
            async with http.stream("GET", server.url + "/chunks") as response:
                peer = response.headers["x-peer"]
                async for _ in response.aiter_lines():
                    break
            answer = await http.get(server.url + "/hello")
            assert answer.headers["x-peer"] != peer  # a new connection, not the dirty one
            assert (await http.get(server.url + "/hello")).headers["x-peer"] == \
                answer.headers["x-peer"]
    run(go())


def test_a_body_cut_short_is_a_protocol_error_and_the_next_request_works(
        server: Server) -> None:
    async def go() -> None:
        async with client() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(server.url + "/cut")
            assert (await http.get(server.url + "/hello")).text == "hello"
    run(go())


def test_timeouts_and_refusals_raise_httpx_errors(server: Server) -> None:
    async def go() -> None:
        async with client(max_connections=1) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(server.url + "/slow", timeout=0.2)
            held = asyncio.ensure_future(http.get(server.url + "/slow", timeout=5))
            await asyncio.sleep(0.1)  # let it take the one connection
            with pytest.raises(httpx.PoolTimeout):
                await http.get(server.url + "/hello", timeout=httpx.Timeout(5, pool=0.2))
            assert (await held).text == "late"
            closed = socket.socket()
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
            closed.close()
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")
    run(go())


def test_tls_verifies_with_the_given_context(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with Server(tls=(cert, key)) as tls:
        async def go() -> None:
            trusted = httpx.AsyncClient(transport=H11Transport(ca_context(cert)))
            async with trusted:
                assert (await trusted.get(tls.url + "/hello")).text == "hello"
            untrusted = httpx.AsyncClient(transport=H11Transport(ssl.create_default_context()))
            async with untrusted:
                with pytest.raises(httpx.ConnectError) as caught:
                    await untrusted.get(tls.url + "/hello")
                assert is_tls_failure(caught.value)
        run(go())


def test_against_the_relay_keep_alive_holds_one_connection(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay") as relay:
        async def go() -> None:
            transport = H11Transport(plain_http_context())
            async with httpx.AsyncClient(transport=transport) as http:
                for _ in range(20):
                    assert (await http.get(relay.url + "/healthz")).status_code == 200
                assert len(transport._open) == 1
        run(go())


def test_a_configured_proxy_leaves_httpx_its_own_transport(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(direct_transport(plain_http_context()), H11Transport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert direct_transport(plain_http_context()) is None
