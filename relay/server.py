"""The programmatic runner behind ``dragoon relay serve`` (as uvicorn's Config + Server).

It binds its own socket, so ``--bind 127.0.0.1:0`` works and the real port is
known, then prints one ``dragoon relay listening on URL`` line to stderr once
uvicorn is ready to accept, which tests and supervisors wait for.

Before that it raises the open-file limit and puts the connection limits of
relay/connlimit.py in uvicorn's place of an HTTP protocol (docs/security.md,
"Connection exhaustion"); failed accepts are logged through relay/floodlog.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from dragoon.relay import connlimit, fdlimit, floodlog, listener, logconf, metrics, systemd
from dragoon.relay.config import RelayConfig
from dragoon.relay.peers import TrustedProxies


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


def bind_socket(host: str, port: int,
                socket_class: type[socket.socket] = socket.socket) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it a keep-alive answer written in two parts waits ~40 ms for a delayed ACK.
    sock = socket_class(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


POSITIVE_SECONDS = ("header_timeout", "keepalive_timeout", "body_timeout", "write_timeout",
                    "session_recheck")
COUNTS = ("body_min_rate", "max_header_size", "max_connections", "max_connections_per_peer",
          "open_burst_per_peer", "open_burst_total", "max_challenges")
RATES = ("open_rate_per_peer", "open_rate_total")


def check_limits(config: RelayConfig) -> None:
    """The settings of docs/security.md, each of its type, or a one-line refusal to serve."""
    for name in POSITIVE_SECONDS + RATES:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (
                name in POSITIVE_SECONDS and value == 0):
            kind = "a positive number of seconds" if name in POSITIVE_SECONDS else "a number ≥ 0"
            raise ServeError(f"{name} in relay.toml must be {kind}")
    for name in COUNTS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ServeError(f"{name} in relay.toml must be a whole number ≥ 0")
    if not isinstance(config.trusted_proxies, list):
        raise ServeError("trusted_proxies in relay.toml must be a list, e.g. [\"127.0.0.1\"]")


def connection_limits(config: RelayConfig, soft_fd_limit: int) -> connlimit.ConnectionLimits:
    """The relay config's connection settings, checked, with the total cap made concrete."""
    check_limits(config)
    try:
        trusted = TrustedProxies(config.trusted_proxies)
    except ValueError as exc:
        raise ServeError(f"relay.toml: {exc}") from exc
    return connlimit.ConnectionLimits(
        header_timeout=config.header_timeout, body_timeout=config.body_timeout,
        body_min_rate=config.body_min_rate, write_timeout=config.write_timeout,
        max_connections=fdlimit.connection_cap(config.max_connections, soft_fd_limit),
        max_per_peer=config.max_connections_per_peer, trusted=trusted,
    )


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, url: str, on_ready: list[Callable[[str], None]],
                 flood: floodlog.FloodLog | None = None, handshake_timeout: float = 60.0):
        super().__init__(config)
        self._url = url
        self._on_ready = on_ready
        self._flood = flood
        self._handshake_timeout = handshake_timeout

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        if self._flood is not None:
            floodlog.install_accept_error_handler(loop, self._flood)
        with listener.tls_handshake_deadline(loop, self._handshake_timeout):
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
    fds = fdlimit.raise_nofile_limit()
    limits = connection_limits(config, fds.soft)
    sock = bind_socket(host, port, socket_class=listener.GatedListener)
    real_port = sock.getsockname()[1]
    scheme = "https" if options.tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{shown}:{real_port}"
    if not config.url:
        config.url = url
    logconf.setup(options.log_level)
    if fds.raised_from is not None:
        logconf.event("fd_limit", raised_from=fds.raised_from, to=fds.soft)
    logconf.event("connection_limits", max_connections=limits.max_connections,
                  per_peer=limits.max_per_peer or "none", header_timeout=limits.header_timeout)
    if config.database:
        from dragoon.relay.pg import masked

        logconf.event("storage", backend="postgresql", database=masked(config.database))
    else:
        logconf.event("storage", backend="sqlite", database=config.db_path)
    app = create_app(config)
    metrics.install_for_relay(app)
    kwargs: dict[str, Any] = {}
    if options.tls_cert is not None:
        kwargs = {"ssl_certfile": str(options.tls_cert), "ssl_keyfile": str(options.tls_key)}
    flood = floodlog.FloodLog()
    gate = connlimit.ConnectionGate(limits, flood)
    uv_config = uvicorn.Config(
        app, log_level=options.log_level, access_log=False, lifespan="on",
        timeout_graceful_shutdown=5, proxy_headers=False,
        http=connlimit.protocol_class(gate),
        timeout_keep_alive=config.keepalive_timeout,  # type: ignore[arg-type]  # a float works
        h11_max_incomplete_event_size=config.max_header_size, **kwargs,
    )
    server = _Server(uv_config, url, options.on_ready, flood,
                     handshake_timeout=limits.header_timeout)
    try:
        systemd.run(server, sockets=[sock])
    finally:
        sock.close()
