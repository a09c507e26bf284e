"""sd_notify by hand: tell systemd the relay is ready, alive, and stopping.

Under a unit of ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a unix
datagram socket; a leading ``@`` means Linux's abstract namespace) and, with
``WatchdogSec=``, ``$WATCHDOG_USEC``. The protocol is one datagram of
``KEY=VALUE`` lines per notification, so libsystemd is not needed.

- ``READY=1`` goes out once uvicorn has bound its sockets, so ``systemctl
  start`` returns only when the relay accepts connections.
- ``WATCHDOG=1`` goes out every half watchdog period from a task on the
  relay's event loop: if the loop blocks, the pings stop and systemd restarts
  the relay, which is the point.
- ``STOPPING=1`` goes out as soon as uvicorn starts its graceful shutdown.

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

log = logging.getLogger("dragoon.relay.systemd")

# The longest the supervisor sleeps between looks at the server: bounds how late
# READY=1 and STOPPING=1 can be, at two wake-ups a second.
_TICK_SECONDS: Final = 0.5
_START_TICK_SECONDS: Final = 0.02


class ServerLike(Protocol):
    """What the supervisor reads from a ``uvicorn.Server``."""

    started: bool
    should_exit: bool


@dataclass(frozen=True)
class Notifier:
    """Where to send notifications, and how often the watchdog wants a ping (None: never)."""

    address: str | bytes
    watchdog_interval: float | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """The notifier systemd asked for, or None when not run as a notify service."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        if not raw or raw[0] not in "/@":
            return None
        address: str | bytes = ("\0" + raw[1:]).encode() if raw[0] == "@" else raw
        return cls(address=address, watchdog_interval=watchdog_interval(env))

    def notify(self, state: str) -> bool:
        """Send one datagram; a lost notification is logged, never fatal to the relay."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(state.encode())
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", state.split("\n", 1)[0], exc)
            return False
        return True


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when the watchdog is meant for this process.

    ``$WATCHDOG_PID``, when set, names the process the watchdog watches; a
    child that inherited the environment must not ping on its parent's behalf.
    """
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


def listening_status(server: Any) -> str:
    """``host:port`` of each bound socket, for systemd's STATUS= line (``systemctl status``)."""
    addresses: list[str] = []
    for srv in getattr(server, "servers", ()) or ():
        for sock in getattr(srv, "sockets", ()) or ():
            name = sock.getsockname()
            if isinstance(name, tuple):
                host = f"[{name[0]}]" if ":" in name[0] else name[0]
                addresses.append(f"{host}:{name[1]}")
            else:
                addresses.append(str(name))
    return ", ".join(addresses)


async def supervise(server: ServerLike, notifier: Notifier) -> None:
    """READY=1 once listening, WATCHDOG=1 every half period, STOPPING=1 when shutdown begins."""
    loop = asyncio.get_running_loop()
    while not server.started:
        if server.should_exit:
            return
        await asyncio.sleep(_START_TICK_SECONDS)
    status = listening_status(server)
    notifier.notify(f"READY=1\nSTATUS=listening on {status}" if status else "READY=1")
    interval = notifier.watchdog_interval
    tick = min(interval, _TICK_SECONDS) if interval else _TICK_SECONDS
    next_ping = loop.time()
    while not server.should_exit:
        if interval is not None and loop.time() >= next_ping:
            notifier.notify("WATCHDOG=1")
            next_ping = loop.time() + interval
        await asyncio.sleep(tick)
    notifier.notify("STOPPING=1")


async def serve(server: Any, sockets: list[socket.socket] | None = None) -> None:
    """Run ``uvicorn.Server.serve`` with systemd notifications when systemd asked for them."""
    notifier = Notifier.from_env()
    if notifier is None:
        await server.serve(sockets=sockets)
        return
    supervisor = asyncio.create_task(supervise(server, notifier), name="sd_notify")
    try:
        await server.serve(sockets=sockets)
    finally:
        if not supervisor.done():
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
            notifier.notify("STOPPING=1")


def run(server: Any, sockets: list[socket.socket] | None = None) -> None:
    """``uvicorn.Server.run`` (same event loop factory) with :func:`serve` in place of ``serve``."""
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(serve(server, sockets))
