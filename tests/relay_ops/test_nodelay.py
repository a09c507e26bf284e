"""The relay's listening socket must give its connections TCP_NODELAY.

uvicorn writes an answer's head and body separately; without TCP_NODELAY the
body waits for the client's delayed ACK, about 40 ms on Linux, on every
keep-alive request after the first. That alone put dispatch latency at 50 ms.
asyncio sets the option only on sockets whose protocol is IPPROTO_TCP.
"""

from __future__ import annotations

import asyncio
import socket

from dragoon.relay.server import bind_socket


def test_connections_accepted_by_serve_have_nodelay() -> None:
    listener = bind_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]

    async def scenario() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=listener)
        async with server:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            value = await asyncio.wait_for(accepted, 5)
            writer.close()
            return value

    assert asyncio.run(scenario()) != 0
