"""The pilot's encryption key (issue 13, docs/security.md "Who a task is encrypted for").

``pilot.x25519`` beside the config file (``~/.config/dragoon/pilot.x25519``), 0600: an X25519
key (PyNaCl, shared/trust.py ``X25519Key``) that opens the task keys sealed to this pilot.
It is separate from the SSH key because a key in the ssh-agent can sign but never decrypt;
the SSH key (file or agent, the signer every request already uses) certifies it instead,
SSHSIG in namespace ``dragoon-pilot-key-v1`` (shared/pilots_list.py), and the relay keeps the
certified public half for the other pilots and the drones to encrypt for.

Made on first need: at ``dragoon login``, or by any command that needs it on a machine that
logged in before it existed. The private key is never logged, never in argv, never sent.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from dragoon.cockpit.client.config import PilotConfigError, config_path
from dragoon.shared.errors import DragoonError
from dragoon.shared.pilots_list import certify_pilot_x25519
from dragoon.shared.signers import Signer
from dragoon.shared.trust import X25519Key, x25519_text

PILOT_KEY_FILE: Final = "pilot.x25519"


def pilot_key_path(env: Mapping[str, str] = os.environ) -> Path:
    return config_path(env).parent / PILOT_KEY_FILE


def _create_exclusive(path: Path, key: X25519Key) -> None:
    """Write ``key`` to ``path`` only if nothing is there: a temp file (0600, fsynced) linked
    into place, so two commands making it at once agree on one key (the loser reads the
    winner's), and no reader ever sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    key.save(tmp)  # 0600, atomic
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_make_pilot_key(env: Mapping[str, str] = os.environ) -> X25519Key:
    """This pilot's X25519 key, made (and kept, 0600) the first time it is needed.

    A key file others may read is refused: whoever reads it reads every task output
    sealed to this pilot."""
    path = pilot_key_path(env)
    if not path.exists():
        _create_exclusive(path, X25519Key.generate())
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PilotConfigError(f"{path} is readable by others (mode {mode:04o}): "
                                   f"chmod 600 {path}")
        return X25519Key.load(path)
    except DragoonError as exc:
        raise PilotConfigError(f"{exc}; remove it to make a new one (output sealed to "
                               "the old key can then no longer be read)") from None
    except OSError as exc:
        raise PilotConfigError(f"{path}: {exc.strerror or exc}") from None


def pilot_certificate(signer: Signer, key: X25519Key) -> str:
    """The SSH key's certificate of ``key``'s public half (base64 SSHSIG, as on the wire)."""
    return certify_pilot_x25519(signer, key.public)


def publication(signer: Signer, key: X25519Key) -> dict[str, str]:
    """The body of ``PUT /v1/pilot/x25519``: the public half and its certificate."""
    return {"x25519_public_key": x25519_text(key.public),
            "x25519_signature": pilot_certificate(signer, key)}
