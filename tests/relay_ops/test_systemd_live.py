"""A real ``dragoon relay serve`` under a fake systemd: a datagram socket this test binds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.support.relay import REPO, init_relay

# uvicorn re-raises the signal once its graceful shutdown is done, so the relay ends
# "killed by SIGTERM", which systemd counts as a clean stop of a service.
CLEAN_EXIT = (0, -signal.SIGTERM)


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    return sock.recv(4096)


def test_serve_notifies_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    init_relay(data)
    name = f"dragoon-notify-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        env = {**os.environ, "NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "200000"}
        env.pop("WATCHDOG_PID", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "dragoon", "relay", "serve", "--data", str(data),
             "--bind", "127.0.0.1:0"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 20
            ready = _recv(sock, deadline).decode()
            # READY=1 means accepting: the very next connection to the announced port works.
            assert ready.startswith("READY=1\nSTATUS=listening on 127.0.0.1:"), ready
            port = int(ready.rsplit(":", 1)[1])
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"ok": True}

            pings = 0
            deadline = time.monotonic() + 5
            while pings < 3:
                message = _recv(sock, deadline)
                assert message == b"WATCHDOG=1", message
                pings += 1

            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            message = _recv(sock, deadline)
            while message == b"WATCHDOG=1":
                message = _recv(sock, deadline)
            assert message == b"STOPPING=1"
            assert process.wait(10) in CLEAN_EXIT
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            assert process.stderr is not None
            process.stderr.close()


def test_serve_without_notify_socket_still_serves(tmp_path: Path) -> None:
    """Outside systemd the notifier is a no-op: serve starts and stops cleanly."""
    data = tmp_path / "relay"
    init_relay(data)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    process = subprocess.Popen(
        [sys.executable, "-m", "dragoon", "relay", "serve", "--data", str(data),
         "--bind", "127.0.0.1:0"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("dragoon relay listening on http://127.0.0.1:"), line
        assert httpx.get(f"{line.split(' on ', 1)[1].strip()}/healthz").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) in CLEAN_EXIT
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        assert process.stderr is not None
        process.stderr.close()
