"""relay/systemd.py against real unix datagram sockets, path and abstract namespace."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from dragoon.relay import systemd
from starlette.types import Receive, Scope, Send


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    """An abstract-namespace datagram socket, named as systemd names it (``@…``)."""
    name = f"dragoon-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    yield "@" + name, sock
    sock.close()


def test_no_notify_socket_means_no_notifier() -> None:
    assert systemd.Notifier.from_env({}) is None
    assert systemd.Notifier.from_env({"NOTIFY_SOCKET": "relative/path"}) is None


def test_notify_reaches_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        notifier = systemd.Notifier.from_env({"NOTIFY_SOCKET": str(path)})
        assert notifier is not None
        assert notifier.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_notify_reaches_an_abstract_socket(abstract_socket: tuple[str, socket.socket]) -> None:
    address, sock = abstract_socket
    notifier = systemd.Notifier.from_env({"NOTIFY_SOCKET": address})
    assert notifier is not None
    assert notifier.notify("STATUS=hello")
    assert sock.recv(4096) == b"STATUS=hello"


def test_a_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = systemd.Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier is not None
    assert notifier.notify("READY=1") is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_period_for_this_process(
    env: dict[str, str], expected: float | None
) -> None:
    assert systemd.watchdog_interval(env) == expected


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    """The smallest ASGI app: the test is about the server's life, not its answers."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_real_uvicorn_server_sends_ready_watchdog_stopping(
    abstract_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, sock = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "40000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    server = uvicorn.Server(uvicorn.Config(_hello, host="127.0.0.1", port=0, lifespan="off",
                                           log_level="warning"))
    sock.setblocking(False)

    async def scenario() -> tuple[list[bytes], int]:
        loop = asyncio.get_running_loop()
        serving = asyncio.create_task(systemd.serve(server))
        got = [await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)]
        # READY=1 must mean "accepting connections": connect to the address it announced.
        port = int(got[0].decode().rsplit(":", 1)[1])
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        deadline = loop.time() + 5
        while got.count(b"WATCHDOG=1") < 3 and loop.time() < deadline:
            got.append(await asyncio.wait_for(loop.sock_recv(sock, 4096), 5))
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        while got[-1] != b"STOPPING=1":
            got.append(await asyncio.wait_for(loop.sock_recv(sock, 4096), 5))
        return got, port

    got, port = asyncio.run(scenario())
    assert got[0] == f"READY=1\nSTATUS=listening on 127.0.0.1:{port}".encode()
    assert got.count(b"WATCHDOG=1") >= 3
    assert got[-1] == b"STOPPING=1"
    assert got.count(b"STOPPING=1") == 1
