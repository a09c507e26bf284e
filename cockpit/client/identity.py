"""Which key signs for the pilot: a named key file, the ssh-agent, or ``~/.ssh/id_ed25519``.

A key named by path may be a private key file (asked for its passphrase on the
terminal only when it is encrypted) or a ``.pub`` file, whose private half is
then expected in the ssh-agent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dragoon.shared.errors import KeyLoadError
from dragoon.shared.keys import PublicKey, load_public_key_file, terminal_passphrase
from dragoon.shared.signers import AgentSigner, KeyFileSigner, Signer


def default_key(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("HOME") or Path.home()) / ".ssh" / "id_ed25519"


def signer_for(key: str | None, *, public_key: str | None = None,
               env: Mapping[str, str] = os.environ) -> Signer:
    """The signer for ``key``; without one, the agent's key (``public_key`` if given, else
    its first), and without an agent ``~/.ssh/id_ed25519``."""
    if key is not None:
        if key.endswith(".pub"):
            return AgentSigner.for_key(load_public_key_file(key), env.get("SSH_AUTH_SOCK"))
        if not Path(key).is_file():
            raise KeyLoadError(key, "no such key file")
        return KeyFileSigner.from_file(key, passphrase=terminal_passphrase(key))
    sock = env.get("SSH_AUTH_SOCK")
    if sock:
        if public_key:
            return AgentSigner.for_key(PublicKey.from_openssh(public_key), sock)
        return AgentSigner.first(sock)
    path = default_key(env)
    if not path.is_file():
        raise KeyLoadError(str(path), "no key given (--key, DRAGOON_KEY or config), "
                                      "no ssh-agent, and no such file")
    return KeyFileSigner.from_file(path, passphrase=terminal_passphrase(path))
