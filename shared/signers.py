"""Signers: one interface over a key file and the ssh-agent.

Everything that signs (requests, logins, tasks) takes a ``Signer`` and calls
``sign(namespace, message)``; where the private key lives is the signer's
business alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from dragoon.shared import sshsig
from dragoon.shared.agent import AgentClient
from dragoon.shared.errors import AgentError, SignatureError
from dragoon.shared.keys import RSA as RSA_KEY
from dragoon.shared.keys import PassphraseSource, PrivateKey, PublicKey, load_private_key_file


class Signer(Protocol):
    @property
    def public_key(self) -> PublicKey: ...

    @property
    def fingerprint(self) -> str: ...

    def sign_ssh(self, data: bytes) -> bytes: ...

    def sign(self, namespace: str, message: bytes) -> bytes: ...


class _SshsigMixin:
    public_key: PublicKey

    @property
    def fingerprint(self) -> str:
        return self.public_key.fingerprint

    def sign_ssh(self, data: bytes) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def sign(self, namespace: str, message: bytes) -> bytes:
        """A binary SSHSIG blob over ``message`` in ``namespace``."""
        return sshsig.sign(self, namespace, message)


class KeyFileSigner(_SshsigMixin):
    """Signs with a private key held in memory (loaded from a file, or generated)."""

    def __init__(self, private_key: PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key

    @classmethod
    def from_file(cls, path: str | Path, *, passphrase: PassphraseSource = None) -> KeyFileSigner:
        return cls(load_private_key_file(path, passphrase=passphrase))

    def sign_ssh(self, data: bytes) -> bytes:
        return self._private_key.sign_ssh(data)


class AgentSigner(_SshsigMixin):
    """Signs through the ssh-agent; the private key never enters this process."""

    def __init__(self, public_key: PublicKey, client: AgentClient | None = None) -> None:
        self._client = client or AgentClient()
        self.public_key = public_key

    @classmethod
    def first(cls, socket_path: str | None = None) -> AgentSigner:
        """The agent's first usable key, as ``ssh`` would try it first."""
        client = AgentClient(socket_path)
        keys = client.identities()
        if not keys:
            raise AgentError("ssh-agent holds no ed25519, RSA or ECDSA key (try ssh-add)")
        return cls(keys[0], client)

    @classmethod
    def for_key(cls, public_key: PublicKey, socket_path: str | None = None) -> AgentSigner:
        """The agent's copy of ``public_key``; an error if the agent does not hold it."""
        client = AgentClient(socket_path)
        for key in client.identities():
            if key.blob == public_key.blob:
                return cls(key, client)
        raise AgentError(f"ssh-agent does not hold {public_key.fingerprint}")

    def sign_ssh(self, data: bytes) -> bytes:
        signature = self._client.sign(self.public_key, data)
        if self.public_key.key_type == RSA_KEY and signature.startswith(b"\x00\x00\x00\x07ssh-rsa"):
            raise AgentError(
                "ssh-agent signed with ssh-rsa (SHA-1) although rsa-sha2-512 was asked"
            )
        # An agent that answers with a signature by another key or over other data
        # would make every request fail later with a puzzling 401; say it here.
        try:
            self.public_key.verify_ssh_signature(signature, data)
        except SignatureError as exc:
            raise AgentError(f"ssh-agent returned an invalid signature ({exc})") from exc
        return signature
