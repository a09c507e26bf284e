"""A real HAProxy in front of relay replicas, for the tests (docs/deploy.md's balancer).

``Balancer(root)`` picks its own loopback port at once (``.url``), so a relay can be
initialised with the balancer's URL before any replica runs; ``start(backends)`` runs
Debian's ``haproxy`` in front of the replicas' ports, checking ``GET /healthz`` every
200 ms (deploy/haproxy.cfg's settings, faster). It keeps running while replicas stop and
start again on the same ports. Its view of the replicas is read from its stats socket
(``states()``), so a test can wait until the balancer itself routes to every replica
(``wait_states``) rather than guess from the replicas' own answers.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CHECK_INTERVAL_MS = 200


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def haproxy_config(port: int, backends: list[tuple[str, int]], *,
                   stats_socket: Path | None = None) -> str:
    """The balancer of docs/deploy.md (deploy/haproxy.cfg), with faster health checks."""
    servers = "\n".join(f"    server {name} 127.0.0.1:{p} check" for name, p in backends)
    stats = f"    stats socket {stats_socket} mode 600 level operator\n" if stats_socket else ""
    return f"""global
    maxconn 4096
{stats}
defaults
    mode http
    option forwardfor
    timeout connect 2s
    timeout client 90s
    timeout server 90s
    timeout http-keep-alive 30s
    timeout tunnel 1h
    retries 2
    option redispatch

frontend relays_in
    bind 127.0.0.1:{port}
    default_backend relays

backend relays
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter {CHECK_INTERVAL_MS}ms fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""


class Balancer:
    """One ``haproxy -db`` process on a port of its own, its config and log under ``root``."""

    def __init__(self, root: Path, *, port: int | None = None) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.names: list[str] = []
        # A unix socket path must stay short (108 bytes): pytest's tmp dirs may not.
        self._stats = Path("/tmp") / f"dragoon-haproxy-{self.port}-{id(self):x}.sock"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, backends: list[tuple[str, int]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.names = [name for name, _ in backends]
        path = self.root / "haproxy.cfg"
        path.write_text(haproxy_config(self.port, backends, stats_socket=self._stats))
        with (self.root / "haproxy.log").open("wb") as log:
            self.process = subprocess.Popen([HAPROXY, "-db", "-f", str(path)],
                                            stdout=log, stderr=subprocess.STDOUT)

    def log_text(self) -> str:
        path = self.root / "haproxy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def states(self) -> dict[str, str]:
        """Server name → HAProxy's status of it (``UP``, ``DOWN``, ``UP 1/2``, ...); empty
        while the stats socket does not answer yet."""
        try:
            with contextlib.closing(socket.socket(socket.AF_UNIX)) as sock:
                sock.settimeout(2)
                sock.connect(str(self._stats))
                sock.sendall(b"show stat\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError:
            return {}
        lines = b"".join(chunks).decode(errors="replace").splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        header = lines[0][2:].split(",")
        found = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "relays" and row.get("svname") in self.names:
                found[row["svname"]] = row.get("status", "")
        return found

    def wait_states(self, accept: str, *, timeout: float = 20.0) -> None:
        """Until HAProxy reports every server as ``accept`` exactly (``UP``), or, for
        ``DOWN``, as anything but up (it is down, or on its way up again)."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"haproxy exited:\n{self.log_text()}")
            states = self.states()
            if len(states) == len(self.names) and all(
                    s == "UP" if accept == "UP" else not s.startswith("UP")
                    for s in states.values()):
                return
            time.sleep(0.02)
        raise TimeoutError(f"the balancer did not see every replica {accept} in {timeout} s: "
                           f"{states}")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        with contextlib.suppress(FileNotFoundError):
            self._stats.unlink()
