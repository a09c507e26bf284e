"""Hostile peers for the connection-exhaustion tests: slow-loris sockets and a relay whose
file-descriptor limit the test chooses.

Linux routes all of 127.0.0.0/8 to the loopback device, so a test can speak
from many source addresses (127.0.x.y) and play a distributed attack on one host.
"""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.relay import RelayProcess

PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n"


def raise_own_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted``; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def source_address(index: int, per_address: int) -> str:
    """The loopback source address for the ``index``-th socket, ``per_address`` to each."""
    n = index // per_address + 2  # 127.0.0.2 upwards: 127.0.0.1 stays the honest client's
    return f"127.0.{n // 250}.{n % 250 + 1}" if n >= 250 else f"127.0.0.{n}"


class SlowLoris:
    """N sockets that send part of a request head, then trickle a header line now and then."""

    def __init__(self, port: int, count: int, *, per_address: int = 0,
                 head: bytes = PARTIAL_HEAD) -> None:
        self.port = port
        self.sockets: list[socket.socket] = []
        self.refused = 0  # connect() failed outright (backlog full, reset)
        for index in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                if per_address:
                    sock.bind((source_address(index, per_address), 0))
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", port))
            except OSError:
                sock.close()
                self.refused += 1
                continue
            self.sockets.append(sock)
        self._head = head
        self._sent_head: set[int] = set()
        self.send_head()

    def send_head(self) -> int:
        """Send the partial head on every socket whose connect has completed; returns how
        many sockets are connected."""
        poller = select.epoll()
        try:
            for sock in self.sockets:
                with contextlib.suppress(OSError, ValueError):
                    poller.register(sock.fileno(), select.EPOLLOUT)
            ready = {fd for fd, mask in poller.poll(0, maxevents=len(self.sockets) + 1)
                     if mask & select.EPOLLOUT and not mask & select.EPOLLERR}
        finally:
            poller.close()
        for sock in self.sockets:
            fd = sock.fileno()
            if fd in ready and fd not in self._sent_head:
                with contextlib.suppress(OSError):
                    sock.send(self._head)
                    self._sent_head.add(fd)
        return len(self._sent_head)

    def trickle(self) -> None:
        """One more header line on every socket: what keeps a slow-loris connection alive."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.send(b"X-Slow: 1\r\n")

    def open_count(self) -> int:
        """Sockets the relay has not closed: readable means EOF, a reset or a refusal answer."""
        poller = select.epoll()
        try:
            for sock in self.sockets:
                with contextlib.suppress(OSError, ValueError):
                    poller.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
            closed = {fd for fd, _ in poller.poll(0, maxevents=len(self.sockets) + 1)}
        finally:
            poller.close()
        return sum(1 for sock in self.sockets if sock.fileno() >= 0
                   and sock.fileno() not in closed)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    def __enter__(self) -> SlowLoris:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_from(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0))
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the relay sends until it closes the connection (or ``timeout`` runs out)."""
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    end = time.monotonic() + timeout
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while time.monotonic() < end:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def is_closed_by_peer(sock: socket.socket) -> bool:
    """True once the relay closed or reset ``sock`` (without consuming data the test wants)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
    events = poller.poll(0)
    return bool(events and events[0][1] & (select.POLLRDHUP | select.POLLHUP | select.POLLERR))


class LimitedRelay(RelayProcess):
    """A RelayProcess started with the file-descriptor limit the test picks (soft, hard):
    every one of its relay subprocesses (each replica's too) sets it before exec."""

    def __init__(self, data_dir: Path, *, nofile: tuple[int, int],
                 config: dict[str, Any] | None = None) -> None:
        self.nofile = nofile
        super().__init__(data_dir, config=config)
        for server in self.servers:
            server.preexec_fn = self._limit

    def _limit(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)


def relay_fd_limits(pid: int) -> tuple[int, int]:
    """The (soft, hard) RLIMIT_NOFILE of another process, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            parts = line.split()
            return int(parts[3]), int(parts[4])
    raise AssertionError("no 'Max open files' line")


def log_lines(relay: RelayProcess) -> int:
    return len(relay.stderr_text().splitlines())


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t:`` leaves the elapsed seconds in ``t[0]``."""
    result: list[float] = []
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.append(time.perf_counter() - start)

