"""The programmatic runner behind ``dragoon relay serve`` (as uvicorn's Config + Server).

It binds its own socket, so ``--bind 127.0.0.1:0`` works and the real port is
known, then prints one ``dragoon relay listening on URL`` line to stderr once
uvicorn is ready to accept, which tests and supervisors wait for.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from dragoon.relay import logconf, metrics, systemd
from dragoon.relay.config import RelayConfig


class ServeError(Exception):
    """A refusal to serve, with a one-line reason for the CLI."""


@dataclass
class ServeOptions:
    bind: str = "127.0.0.1:8787"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    log_level: str = "warning"
    # Called with the URL once listening (systemd's READY=1 hooks in here).
    on_ready: list[Callable[[str], None]] = field(default_factory=list)


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ServeError(f"--bind must be HOST:PORT, not {bind!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_options(options: ServeOptions) -> tuple[str, int]:
    host, port = parse_bind(options.bind)
    if (options.tls_cert is None) != (options.tls_key is None):
        raise ServeError("--tls-cert and --tls-key go together")
    if options.tls_cert is None and not is_loopback(host) and not options.insecure:
        raise ServeError(
            f"refusing to serve plain HTTP on {host}: give --tls-cert/--tls-key, "
            "put a TLS proxy in front on loopback, or pass --insecure"
        )
    return host, port


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it a keep-alive answer written in two parts waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, url: str, on_ready: list[Callable[[str], None]]):
        super().__init__(config)
        self._url = url
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        print(f"dragoon relay listening on {self._url}", file=sys.stderr, flush=True)
        for hook in self._on_ready:
            hook(self._url)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Held polls and event streams would otherwise hold shutdown for the whole grace.
        app = self.config.app
        relay = getattr(getattr(app, "state", None), "relay", None)
        if relay is not None:
            relay.stopping()
        await super().shutdown(sockets=sockets)


def serve(config: RelayConfig, options: ServeOptions) -> None:
    """Bind, build the app, and run until SIGTERM/SIGINT."""
    from dragoon.relay.app import create_app

    host, port = check_options(options)
    sock = bind_socket(host, port)
    real_port = sock.getsockname()[1]
    scheme = "https" if options.tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{shown}:{real_port}"
    if not config.url:
        config.url = url
    logconf.setup(options.log_level)
    app = create_app(config)
    metrics.install_for_relay(app)
    kwargs: dict[str, Any] = {}
    if options.tls_cert is not None:
        kwargs = {"ssl_certfile": str(options.tls_cert), "ssl_keyfile": str(options.tls_key)}
    uv_config = uvicorn.Config(
        app, log_level=options.log_level, access_log=False, lifespan="on",
        timeout_graceful_shutdown=5, proxy_headers=False, **kwargs,
    )
    server = _Server(uv_config, url, options.on_ready)
    try:
        systemd.run(server, sockets=[sock])
    finally:
        sock.close()
