"""Where the pilot's settings come from, and where the session token is kept.

The relay URL and the key are resolved in CLI.md's order: flags, then
``DRAGOON_RELAY``/``DRAGOON_KEY``, then the config file
(``$DRAGOON_CONFIG``, else ``$XDG_CONFIG_HOME/dragoon/config.toml``, else
``~/.config/dragoon/config.toml``), then the last login's session. The session
token lives in ``session.json`` (mode 0600) under ``$XDG_STATE_HOME/dragoon/``
or ``~/.local/state/dragoon/``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dragoon.shared.keys import write_private_file


class PilotConfigError(Exception):
    """A setting is missing or unreadable; the message says which and how to give it."""


@dataclass(frozen=True)
class PilotSettings:
    relay: str | None
    key: str | None
    ca_cert: str | None


@dataclass(frozen=True)
class StoredSession:
    """The session file: the token and what it is bound to (relay, key)."""

    relay: str
    token: str
    expires_at: float
    pilot: str | None
    fingerprint: str
    key: str | None  # the key file that logged in; None when it was the ssh-agent
    public_key: str  # OpenSSH line, to find the same key in the agent again
    ca_cert: str | None = None  # the CA file the login trusted (absent from older files)

    @property
    def expired(self) -> bool:
        return self.expires_at <= time.time()


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("DRAGOON_CONFIG"):
        return Path(env["DRAGOON_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(_home(env) / ".config")
    return Path(base) / "dragoon" / "config.toml"


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_STATE_HOME") or str(_home(env) / ".local" / "state")
    return Path(base) / "dragoon"


def load_config(path: Path) -> dict[str, Any]:
    """The config file's table, empty when there is no file."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise PilotConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PilotConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for name in ("relay", "key", "ca_cert"):
        if name in data and not isinstance(data[name], str):
            raise PilotConfigError(f"config file {path}: {name} must be a string")
    return data


def resolve(*, relay: str | None = None, key: str | None = None, ca_cert: str | None = None,
            env: Mapping[str, str] = os.environ) -> PilotSettings:
    """Flags win, then the environment, then the config file (read only when needed)."""
    relay = relay or env.get("DRAGOON_RELAY") or None
    key = key or env.get("DRAGOON_KEY") or None
    ca_cert = ca_cert or env.get("DRAGOON_CA_CERT") or None
    if relay is None or key is None or ca_cert is None:
        config = load_config(config_path(env))
        relay = relay or config.get("relay")
        key = key or config.get("key")
        ca_cert = ca_cert or config.get("ca_cert")
    return PilotSettings(
        relay=normalize_relay(relay) if relay else None,
        key=str(Path(key).expanduser()) if key else None,
        ca_cert=str(Path(ca_cert).expanduser()) if ca_cert else None,
    )


def normalize_relay(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; anything else is an error."""
    url = url.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or " " in rest:
        raise PilotConfigError(f"relay URL {url!r} must look like https://host:port")
    return url


class SessionStore:
    """The one session file; written atomically with mode 0600 (it holds a bearer token)."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self.path = state_dir(env) / "session.json"

    def load(self) -> StoredSession | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return StoredSession(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise PilotConfigError(
                f"session file {self.path} is unreadable ({exc}); run `dragoon login`"
            ) from exc

    def save(self, session: StoredSession) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private_file(self.path, json.dumps(asdict(session), indent=1).encode())

    def clear(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
