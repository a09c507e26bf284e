"""Several relay replicas on one PostgreSQL database, behind a real HAProxy.

``ReplicaSet(root, count=3)`` — context manager. Initialises one data dir on a fresh
database (tests/support/pg.py), copies it for each further replica (the same signing
key and relay.toml, as docs/deploy.md has an operator do), starts a real ``dragoon relay
serve`` on each (tests/support/relay.py ``RelayProcess``), and, with ``balancer=True``,
Debian's ``haproxy`` in front of them on its own loopback port, checking ``GET /healthz``
every 200 ms (docs/deploy.md's settings, faster). ``.url`` is the balancer's (join tokens
name it), ``.replicas[i]`` each replica (its own ``.url``, ``.kill9()``, ``.start()``),
``.pilot(name)`` a pilot logged in through the balancer. Everything is stopped at the end
and the database dropped.

HAProxy balances each request on its own (HTTP mode, round robin), so a pilot's and a
drone's requests land on every replica in turn: a test through the balancer crosses
replicas at every step without asking to.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.balancer import HAPROXY, free_port, haproxy_config
from tests.support.relay import PilotSession, RelayProcess, init_relay, release_database

__all__ = ["HAPROXY", "ReplicaSet", "free_port", "haproxy_config", "replica_set", "wait_for"]

class ReplicaSet:
    def __init__(self, root: Path, *, count: int = 3, balancer: bool = True,
                 config: Mapping[str, Any] | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.balancer = balancer
        self.config = dict(config or {})
        first = root / "replica-0"
        init_relay(first, url=self.url, config=self.config, backend="postgresql")
        for i in range(1, count):
            shutil.copytree(first, root / f"replica-{i}")
        self.replicas = [RelayProcess(root / f"replica-{i}", url=self.url, config=self.config,
                                      backend="postgresql") for i in range(count)]
        self.haproxy: subprocess.Popen[bytes] | None = None
        self._clients: list[PilotSession] = []

    def __enter__(self) -> ReplicaSet:
        try:
            for relay in self.replicas:
                relay.start()
            if self.balancer:
                self._start_haproxy()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _start_haproxy(self) -> None:
        backends = [(f"r{i}", int(r.url.rsplit(":", 1)[1])) for i, r in enumerate(self.replicas)]
        path = self.root / "haproxy.cfg"
        path.write_text(haproxy_config(self.port, backends))
        log = (self.root / "haproxy.log").open("wb")
        self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(path)],
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_served(count=len(self.replicas))

    def wait_served(self, *, count: int, timeout: float = 20.0) -> None:
        """Until the balancer answers /healthz and (by its stats) ``count`` servers are up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.haproxy is not None and self.haproxy.poll() is not None:
                raise RuntimeError("haproxy exited:\n"
                                   + (self.root / "haproxy.log").read_text(errors="replace"))
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200 and \
                        self.up() >= count:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"the balancer did not serve {count} replicas in {timeout} s")

    def up(self) -> int:
        """How many replicas answer /healthz directly."""
        count = 0
        for relay in self.replicas:
            if relay.process is None or relay.process.poll() is not None:
                continue
            with contextlib.suppress(httpx.HTTPError):
                count += httpx.get(f"{relay.url}/healthz", timeout=1).status_code == 200
        return count

    def pilot(self, name: str = "alice") -> PilotSession:
        """A pilot logged in through the balancer (or replica 0 without one)."""
        session = self.replicas[0].pilot(name)
        if self.balancer:
            session.url = self.url
            session.reconnect()  # the next request dials the balancer
        return session

    def close(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(10)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
        for relay in self.replicas:
            with contextlib.suppress(Exception):
                relay.kill9()  # a graceful stop waits on held polls; not under test here
        for relay in self.replicas:
            release_database(relay.data_dir)


def wait_for(condition: Any, *, timeout: float, message: str) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(message)
        time.sleep(0.02)


@contextlib.contextmanager
def replica_set(root: Path, **options: Any) -> Iterator[ReplicaSet]:
    with ReplicaSet(root, **options) as replicas:
        yield replicas
