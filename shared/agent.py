"""A minimal ssh-agent client (draft-miller-ssh-agent): list identities and sign.

This is the only place dragoon talks to the agent socket. It speaks the two
requests it needs and nothing else, and turns every failure (no socket, a
refusal, a confused answer) into one AgentError with a reason.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Final

from dragoon.shared import _wire
from dragoon.shared.errors import AgentError, KeyLoadError, WireFormatError
from dragoon.shared.keys import RSA, PublicKey

SSH_AGENT_FAILURE: Final = 5
SSH_AGENTC_REQUEST_IDENTITIES: Final = 11
SSH_AGENT_IDENTITIES_ANSWER: Final = 12
SSH_AGENTC_SIGN_REQUEST: Final = 13
SSH_AGENT_SIGN_RESPONSE: Final = 14
SSH_AGENT_RSA_SHA2_512: Final = 0x04
MAX_REPLY: Final = 256 * 1024
TIMEOUT_SECONDS: Final = 30.0


class AgentClient:
    """Talks to the agent at ``socket_path`` (default ``$SSH_AUTH_SOCK``).

    One request per connection, so a client object is safe to share and never
    holds a socket open between signatures.
    """

    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path or os.environ.get("SSH_AUTH_SOCK")
        if not path:
            raise AgentError("no ssh-agent: SSH_AUTH_SOCK is not set")
        self.socket_path = path

    def _request(self, message_type: int, payload: bytes) -> tuple[int, bytes]:
        body = bytes([message_type]) + payload
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(TIMEOUT_SECONDS)
                sock.connect(self.socket_path)
                sock.sendall(struct.pack(">I", len(body)) + body)
                (length,) = struct.unpack(">I", _recv_exactly(sock, 4))
                if length == 0 or length > MAX_REPLY:
                    raise AgentError(f"ssh-agent sent a reply of {length} bytes")
                reply = _recv_exactly(sock, length)
        except OSError as exc:
            raise AgentError(f"ssh-agent at {self.socket_path}: {exc.strerror or exc}") from exc
        return reply[0], reply[1:]

    def identities(self) -> list[PublicKey]:
        """The agent's keys that dragoon can use (others, e.g. certificates, are skipped)."""
        kind, payload = self._request(SSH_AGENTC_REQUEST_IDENTITIES, b"")
        if kind != SSH_AGENT_IDENTITIES_ANSWER:
            raise AgentError(f"ssh-agent refused to list keys (answer type {kind})")
        reader = _wire.WireReader(payload, what="ssh-agent identities answer")
        keys: list[PublicKey] = []
        try:
            for _ in range(reader.uint32()):
                blob, comment = reader.string(), reader.text()
                try:
                    keys.append(PublicKey.from_blob(blob, comment, source="agent key"))
                except KeyLoadError:
                    continue
        except WireFormatError as exc:
            raise AgentError(str(exc)) from exc
        return keys

    def sign(self, key: PublicKey, data: bytes) -> bytes:
        """An SSH signature blob by ``key``; RSA keys are asked for rsa-sha2-512."""
        flags = SSH_AGENT_RSA_SHA2_512 if key.key_type == RSA else 0
        payload = _wire.string(key.blob) + _wire.string(data) + _wire.uint32(flags)
        kind, answer = self._request(SSH_AGENTC_SIGN_REQUEST, payload)
        if kind == SSH_AGENT_FAILURE:
            raise AgentError(f"ssh-agent refused to sign with {key.fingerprint}")
        if kind != SSH_AGENT_SIGN_RESPONSE:
            raise AgentError(f"ssh-agent sent an unexpected answer (type {kind})")
        try:
            reader = _wire.WireReader(answer, what="ssh-agent signature")
            signature = reader.string()
            reader.expect_end()
        except WireFormatError as exc:
            raise AgentError(str(exc)) from exc
        return signature


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    chunks: list[bytes] = []
    while count:
        chunk = sock.recv(count)
        if not chunk:
            raise AgentError("ssh-agent closed the connection mid-reply")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)
