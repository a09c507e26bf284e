"""A real ``ssh-agent`` on its own socket, for tests that sign through the agent.

The agent is OpenSSH's, started in the foreground (``ssh-agent -D -a SOCK``)
so that the test owns the process and always reaps it; it never touches the
user's own agent or ``SSH_AUTH_SOCK``. Typical use::

    with running_ssh_agent() as agent:
        agent.add(key_path)                       # ssh-add
        signer = AgentSigner.first(str(agent.socket_path))

``FakeAgent`` is the one stand-in: a real socket server that answers every
request with a fixed reply, to show how dragoon behaves when an agent refuses
or talks nonsense, which a real agent cannot be made to do on demand.
"""

from __future__ import annotations

import os
import shutil
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

SSH_AGENT_FAILURE: Final = 5
SSH_AGENTC_REQUEST_IDENTITIES: Final = 11
SSH_AGENTC_SIGN_REQUEST: Final = 13
SSH_AGENT_SIGN_RESPONSE: Final = 14


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _short_socket_dir() -> Path:
    # AF_UNIX paths are limited to ~108 bytes; pytest's tmp_path can be longer.
    return Path(tempfile.mkdtemp(prefix="dragoon-agent-"))


@dataclass
class SshAgent:
    """A running ssh-agent that this test process started and will stop."""

    socket_path: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def env(self) -> dict[str, str]:
        """The environment to run OpenSSH tools (ssh-add, ssh-keygen -Y sign) against this agent."""
        return {**os.environ, "SSH_AUTH_SOCK": str(self.socket_path),
                "SSH_AGENT_PID": str(self.pid)}

    def add(self, key_path: Path) -> None:
        """Load an unencrypted private key into this agent with ``ssh-add``."""
        ssh_add(key_path, self.socket_path)

    def remove_all(self) -> None:
        """``ssh-add -D``: the agent keeps running but holds no key."""
        _run_ssh_add(["-D"], self.socket_path)

    def stop(self) -> None:
        """Terminate the agent and wait for it, so no process outlives the test."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.socket_path.parent, ignore_errors=True)


def start_ssh_agent() -> SshAgent:
    """Start ``ssh-agent -D`` on a fresh socket; return once it accepts connections.

    The agent prints its ``SSH_AUTH_SOCK=…`` line only after it has bound the
    socket, so reading that line is the readiness signal (no sleeping).
    """
    directory = _short_socket_dir()
    socket_path = directory / "agent.sock"
    # The agent logs to stderr in the foreground; a file, unlike a pipe nobody
    # reads, can never fill up and stall it.
    with (directory / "agent.log").open("wb") as log:
        process = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(socket_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
        )
    assert process.stdout is not None
    first_line = process.stdout.readline()
    process.stdout.close()
    if b"SSH_AUTH_SOCK" not in first_line or not socket_path.exists():
        process.kill()
        process.wait()
        log_text = (directory / "agent.log").read_text(errors="replace")
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"ssh-agent did not start: {log_text}")
    return SshAgent(socket_path, process)


@contextmanager
def running_ssh_agent() -> Iterator[SshAgent]:
    """A fresh ssh-agent for the ``with`` block, stopped (and its socket removed) after."""
    agent = start_ssh_agent()
    try:
        yield agent
    finally:
        agent.stop()


def ssh_add(key_path: Path, socket_path: Path | None = None) -> None:
    """``ssh-add KEY`` against the agent at ``socket_path`` (default: ``$SSH_AUTH_SOCK``).

    The key must be unencrypted: there is no terminal to ask for a passphrase.
    """
    _run_ssh_add([str(key_path)], socket_path)


def _run_ssh_add(args: list[str], socket_path: Path | None) -> None:
    env = dict(os.environ)
    if socket_path is not None:
        env["SSH_AUTH_SOCK"] = str(socket_path)
    env.pop("SSH_ASKPASS", None)
    done = subprocess.run(["ssh-add", "-q", *args], env=env, capture_output=True,
                          stdin=subprocess.DEVNULL, check=False, timeout=60)
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")
        raise RuntimeError(f"ssh-add {' '.join(args)} failed: {stderr}")


def agent_sign_raw(socket_path: Path, key_blob: bytes, data: bytes, flags: int) -> bytes:
    """Send one SSH_AGENTC_SIGN_REQUEST with explicit ``flags``; return the signature blob.

    dragoon's client always asks RSA keys for rsa-sha2-512; this lets a test
    ask for what an old client would (flags 0 gives an ``ssh-rsa`` SHA-1 signature).
    """
    body = bytes([SSH_AGENTC_SIGN_REQUEST]) + _string(key_blob) + _string(data)
    body += struct.pack(">I", flags)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(socket_path))
        sock.sendall(struct.pack(">I", len(body)) + body)
        reply = _read_message(sock)
    if reply[0] != SSH_AGENT_SIGN_RESPONSE:
        raise RuntimeError(f"agent answered type {reply[0]}")
    (length,) = struct.unpack(">I", reply[1:5])
    return reply[5 : 5 + length]


def _recv_exactly(sock: socket.socket, count: int) -> bytes | None:
    chunks = b""
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return chunks


def _read_message(sock: socket.socket) -> bytes:
    header = _recv_exactly(sock, 4)
    if header is None:
        raise RuntimeError("agent closed the connection")
    (length,) = struct.unpack(">I", header)
    body = _recv_exactly(sock, length)
    if body is None:
        raise RuntimeError("agent closed the connection mid-message")
    return body


# A reply function maps (request type, request payload) to the raw reply bytes
# to send (length prefix included, so that tests can also send broken frames),
# or None to close the connection without answering.
Reply = Callable[[int, bytes], bytes | None]


def frame(body: bytes) -> bytes:
    """An agent message with its length prefix."""
    return struct.pack(">I", len(body)) + body


def always_fail(_kind: int, _payload: bytes) -> bytes:
    """The answer of an agent that refuses everything: SSH_AGENT_FAILURE."""
    return frame(bytes([SSH_AGENT_FAILURE]))


@dataclass
class FakeAgent:
    """A socket server speaking just enough agent protocol to refuse or misbehave.

    It answers every request with ``reply(type, payload)``; requests are
    recorded in ``requests`` so a test can check what the client asked.
    """

    reply: Reply = always_fail
    requests: list[tuple[int, bytes]] = field(default_factory=list)
    socket_path: Path = field(default_factory=lambda: _short_socket_dir() / "fake.sock")
    _server: socketserver.UnixStreamServer | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> FakeAgent:
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    message = _read_message(self.request)
                except RuntimeError:
                    return
                fake.requests.append((message[0], message[1:]))
                answer = fake.reply(message[0], message[1:])
                if answer is not None:
                    self.request.sendall(answer)

        self._server = socketserver.UnixStreamServer(str(self.socket_path), Handler)
        # A short poll interval only bounds how long __exit__ waits for the loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        shutil.rmtree(self.socket_path.parent, ignore_errors=True)
