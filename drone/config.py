"""The drone's settings file (``drone.toml``): who it is, where the relay is, its ceilings.

The drone's settings are the ceiling over what the relay asks: a task's
timeout and grace are cut to the drone's maxima, and the drone never runs
more than ``slots`` tasks at once whatever the relay sends. The file is read
with tomllib and written here by hand (it is small and flat).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from dragoon.drone.state import write_atomic

DEFAULT_GRACE: Final = 10.0
DEFAULT_MAX_GRACE: Final = 300.0
DEFAULT_MAX_ARTIFACT_BYTES: Final = 1 << 30
DEFAULT_MAX_FETCH_BYTES: Final = 1 << 30
DEFAULT_POLL_WAIT: Final = 25.0


class SettingsError(Exception):
    """The settings file is missing, unreadable or holds a bad value; the text says which."""


@dataclass
class DroneSettings:
    name: str
    relay: str
    slots: int = 1
    labels: list[str] = field(default_factory=list)
    fetch_roots: list[str] = field(default_factory=list)  # empty: the drone's work dirs
    max_timeout: float = 0.0  # seconds; 0 means no ceiling
    default_grace: float = DEFAULT_GRACE
    max_grace: float = DEFAULT_MAX_GRACE
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    max_fetch_bytes: int = DEFAULT_MAX_FETCH_BYTES
    poll_wait: float = DEFAULT_POLL_WAIT
    # The CA bundle the relay's TLS certificate must chain to; empty: the system's CAs.
    # A relative path is inside the data dir (`join --ca-cert` copies the file there).
    ca_cert: str = ""

    def effective_timeout(self, asked: float | None) -> float | None:
        """The relay's timeout, cut to ``max_timeout`` (which also applies when none is asked)."""
        if self.max_timeout > 0:
            return min(asked, self.max_timeout) if asked else self.max_timeout
        return asked if asked else None

    def ca_cert_path(self, data_dir: Path) -> Path | None:
        """The CA file to trust, relative paths taken from the data dir; None: system CAs."""
        if not self.ca_cert:
            return None
        path = Path(self.ca_cert).expanduser()
        return path if path.is_absolute() else data_dir / path

    def effective_grace(self, asked: float | None) -> float:
        grace = self.default_grace if asked is None else max(0.0, float(asked))
        return min(grace, self.max_grace)


_COMMENTS: Final = {
    "name": "the drone's name at the relay (set by `dragoon drone join`)",
    "relay": "the relay's URL (set by `dragoon drone join`)",
    "slots": "how many tasks run at once, at most",
    "labels": "labels a task can target",
    "fetch_roots": "folders a pilot may fetch files from; empty means the drone's work dirs",
    "max_timeout": "seconds; a task's timeout is cut to this (0: no ceiling)",
    "default_grace": "seconds between SIGTERM and SIGKILL when the spec gives none",
    "max_grace": "seconds; a longer grace asked by the relay is cut to this",
    "max_artifact_bytes": "total size of the artifacts one task may upload",
    "max_fetch_bytes": "largest file a pilot may fetch",
    "poll_wait": "seconds the relay may hold a poll",
    "ca_cert": "CA bundle the relay's TLS certificate must chain to, relative to the data dir "
               "(\"\": the system's CAs)",
}


def _toml_value(value: Any) -> str:
    # JSON strings, numbers and arrays of strings are valid TOML literals.
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def render(settings: DroneSettings) -> str:
    lines = ["# dragoon drone settings: the drone's ceilings over what the relay asks.", ""]
    for item in fields(settings):
        lines.append(f"# {_COMMENTS[item.name]}")
        lines.append(f"{item.name} = {_toml_value(getattr(settings, item.name))}")
    return "\n".join(lines) + "\n"


def save(settings: DroneSettings, path: Path) -> None:
    write_atomic(path, render(settings).encode("utf-8"), mode=0o644)


def load(path: Path) -> DroneSettings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"{path} does not exist (run `dragoon drone join` first)") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path}: {exc}") from exc
    known = {item.name: item for item in fields(DroneSettings)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SettingsError(f"{path}: unknown setting {', '.join(unknown)}")
    for required in ("name", "relay"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise SettingsError(f"{path}: `{required}` must be a non-empty string")
    settings = DroneSettings(name=data["name"], relay=data["relay"])
    for key, value in data.items():
        default = getattr(settings, key)
        if isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            value = float(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        else:
            ok = isinstance(value, str)
        if not ok:
            raise SettingsError(f"{path}: `{key}` = {value!r} is not valid")
        setattr(settings, key, value)
    if settings.slots < 1:
        raise SettingsError(f"{path}: `slots` must be at least 1")
    return settings
