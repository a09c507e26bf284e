"""Which key signs for the pilot: a named key file, the ssh-agent, or ``~/.ssh/id_ed25519``.

As ssh does with an identity file: the key is signed with through the
ssh-agent when the agent holds it, and loaded from its file otherwise — an
agent that is running but holds other keys, none, or refuses to answer is no
reason to fail while the file is there. The agent is asked first so that an
encrypted key already added to it never costs a passphrase.

A key named by path may be a private key file or a ``.pub`` file (whose
private half is then expected in the agent, or beside it). A private key file
must not be readable by other users (ssh refuses those too). An encrypted one
is asked for its passphrase on the terminal; with no terminal to ask on, the
one line says to add it to the ssh-agent instead.
"""

from __future__ import annotations

import getpass
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from dragoon.shared.errors import AgentError, KeyLoadError
from dragoon.shared.keys import PublicKey, load_public_key_file, public_half_of_private_file
from dragoon.shared.signers import AgentSigner, KeyFileSigner, Signer


def default_key(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("HOME") or Path.home()) / ".ssh" / "id_ed25519"


def signer_for(key: str | None, *, public_key: str | None = None,
               env: Mapping[str, str] = os.environ) -> Signer:
    """The signer for ``key``.

    Without one: ``public_key`` (the OpenSSH line of a session made through the
    agent) from the agent, or from ``~/.ssh/id_ed25519`` if that is the same key;
    else ``~/.ssh/id_ed25519`` (through the agent if it holds it); else, with no
    such file, the agent's first key.
    """
    sock = env.get("SSH_AUTH_SOCK") or None
    default = default_key(env)
    if key is not None:
        if key.endswith(".pub"):
            beside = Path(key[: -len(".pub")])
            return _agent_or_file(load_public_key_file(key), beside if beside.is_file() else None,
                                  sock)
        path = Path(key)
        if not path.is_file():
            raise KeyLoadError(key, "no such key file")
        return _agent_or_file(public_half_of_private_file(path), path, sock)
    if public_key:
        wanted = PublicKey.from_openssh(public_key, source="the session's key")
        found = public_half_of_private_file(default) if default.is_file() else None
        same = found is not None and found.blob == wanted.blob
        return _agent_or_file(wanted, default if same else None, sock)
    if default.is_file():
        return _agent_or_file(public_half_of_private_file(default), default, sock)
    if sock:
        return AgentSigner.first(sock)
    raise KeyLoadError(str(default), "no key given (--key, DRAGOON_KEY or config), "
                                     "no ssh-agent, and no such file")


def _agent_or_file(wanted: PublicKey | None, path: Path | None, sock: str | None) -> Signer:
    """``wanted`` through the agent when it holds it, else the key file at ``path``."""
    agent_error: AgentError | None = None
    if sock is not None and wanted is not None:
        try:
            return AgentSigner.for_key(wanted, sock)
        except AgentError as exc:
            agent_error = exc
    if path is None:
        if agent_error is not None:
            raise agent_error
        raise AgentError("no ssh-agent (SSH_AUTH_SOCK is not set) and no private key file "
                         "beside the public key")
    _check_private(path)
    return KeyFileSigner.from_file(path, passphrase=terminal_passphrase(path))


def _check_private(path: Path) -> None:
    """Refuse a private key file other users can read, as ssh does: it is no longer a secret."""
    try:
        info = path.stat()
    except OSError as exc:
        raise KeyLoadError(str(path), exc.strerror or str(exc)) from exc
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077 and info.st_uid == os.getuid():
        raise KeyLoadError(str(path), f"permissions {mode:04o} let other users read this "
                                      f"private key; run `chmod 600 {path}`")


def terminal_passphrase(path: Path) -> Callable[[], str]:
    """Asks on the terminal, without echo, only once the key turns out to be encrypted.

    Never on stdin: with no terminal (a script, a pipe, a service) getpass would
    read the passphrase from stdin with a warning, and take what was meant for
    something else (the TOTP code); the agent is the way to use such a key there.
    """

    def ask() -> str:
        try:
            tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        except OSError:
            raise KeyLoadError(str(path), "key is passphrase-protected and there is no terminal "
                                          f"to ask for it: load it into the ssh-agent "
                                          f"(`ssh-add {path}`)") from None
        os.close(tty)
        from dragoon.cockpit.client.prompt import interruptible

        with interruptible():
            return getpass.getpass(f"Passphrase for {path}: ")

    return ask
