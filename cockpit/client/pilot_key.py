"""The pilot's encryption key: an X25519 key under the pilot's config dir, 0600.

An SSH key in ssh-agent can sign but not decrypt, so every pilot (key file or agent, any
key type) opens task keys with this key instead; it never leaves the pilot's machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dragoon.cockpit.client.config import config_path
from dragoon.shared.trust import X25519Key


def pilot_key_path(env: Mapping[str, str] = os.environ) -> Path:
    """``pilot.x25519`` beside the config file: ``~/.config/dragoon/pilot.x25519``."""
    return config_path(env).parent / "pilot.x25519"


def load_or_make_pilot_key(env: Mapping[str, str] = os.environ) -> X25519Key:
    """The pilot's X25519 key, made (0600, atomically) the first time it is needed."""
    path = pilot_key_path(env)
    if path.exists():
        return X25519Key.load(path)
    key = X25519Key.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key.save(path)
    return key
