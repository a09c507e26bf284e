"""Relay configuration: where the data lives and every limit, TTL and threshold.

``RelayConfig.load(data_dir)`` reads ``relay.toml`` from the data directory
(written by ``dragoon relay init``) so that ``serve`` and the admin commands
agree on one file, and tests can tighten thresholds without new flags.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from dragoon.relay import units
from dragoon.shared.spec import MESSAGE_CAP

CONFIG_FILE: Final = "relay.toml"
DB_FILE: Final = "relay.db"
KEY_FILE: Final = "relay_key"

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB


class ConfigError(ValueError):
    """A setting in relay.toml that cannot be read; the text is the one line to show."""


@dataclass
class RelayConfig:
    """Everything the relay needs to run; defaults are the documented ones."""

    data_dir: Path
    url: str = ""  # the public URL put in join tokens; empty: the address serve listens on
    # Where the relay keeps its state (docs/storage.md): empty, relay.db in the data dir
    # (SQLite); a postgresql://user:password@host/db URL, that PostgreSQL database (the data
    # dir then holds only relay.toml and the signing key), shared by every replica on it
    # (relay/bus.py wakes them across). `serve --database` overrides it.
    database: str = ""
    # Sessions and tokens.
    session_ttl: float = 12 * 3600
    enroll_ttl: float = 3600
    challenge_ttl: float = 60
    nonce_ttl: float = 300
    # Login lock-out: this many failures within the window lock the pilot out.
    lockout_failures: int = 5
    lockout_window: float = 300
    # Dispatch.
    poll_max_wait: float = 25
    offline_after: float = 80  # about three missed polls
    task_expires_in: float = 7 * 86400
    task_lost_after: float = 86400
    sweep_interval: float = 5
    # Limits.
    max_body: int = 1 * MiB
    max_log_chunk: int = 256 * KiB
    output_cap: int = 1 * GiB
    artifact_max: int = 4 * GiB
    message_max: int = MESSAGE_CAP  # shared/spec.py: what `dragoon notify` and drones send
    # A task's stdin (relay/stdin.py): at most this many bytes the drone has not taken yet
    # are held per task (plus one chunk of max_log_chunk); the pilot's upload waits beyond.
    stdin_window: int = 4 * MiB
    queued_per_pilot: int = 20000
    # Retention and disk quotas (relay/retention.py, relay/quota.py, docs/operations.md).
    # Durations like "30d", sizes like "50G" (relay/units.py); "none" turns one off.
    retention: str | float = "30d"  # finished tasks' output older than this is dropped
    gc_interval: float = 600  # how often the relay's sweeper applies the retention
    drone_quota: str | int = "none"  # bytes stored per drone: logs + artifacts + fetched files
    storage_quota: str | int = "none"  # the same, all drones together
    # Connections (docs/security.md, "Connection exhaustion"). A request's head must be
    # complete within header_timeout of the connection (or of its first byte on a kept-alive
    # connection); an idle kept-alive connection is closed after keepalive_timeout.
    header_timeout: float = 10
    keepalive_timeout: float = 5
    # A body must finish within each body_timeout window or bring body_min_rate bytes/s in it.
    body_timeout: float = 30
    body_min_rate: int = 256
    # A peer that takes no byte of an answer for write_timeout is cut off.
    write_timeout: float = 60
    max_header_size: int = 16 * KiB
    # 0: derived from the file-descriptor limit (7/8 of it); a larger value is lowered to that.
    max_connections: int = 0
    max_connections_per_peer: int = 128  # 0: no per-peer cap
    # Peers that are reverse proxies: not capped per address (each carries many clients), and
    # their X-Forwarded-For names the client for rate limits. The shipped unit sits on loopback.
    trusted_proxies: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1"])
    # Unauthenticated routes (challenge, login, drone init): token buckets per client address
    # and per route, and one per route for all clients together; over them, 429 + Retry-After.
    open_rate_per_peer: float = 2
    open_burst_per_peer: int = 20
    open_rate_total: float = 50
    open_burst_total: int = 200
    max_challenges: int = 10000  # live login challenges; the oldest give way past this
    # Event streams and held requests re-check their pilot's session this often.
    session_recheck: float = 2
    # Events kept for cockpits that reconnect (relay/events.py): the newest events_kept, none
    # older than events_max_age ("none": no age limit); an older Last-Event-ID gets a reset.
    events_kept: int = 10000
    events_max_age: str | float = "1h"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("retention_seconds", "drone_quota_bytes", "storage_quota_bytes",
                     "events_max_age_seconds"):
            try:
                getattr(self, name)
            except ValueError as exc:
                raise ConfigError(f"{CONFIG_FILE}: {name.rsplit('_', 1)[0]}: {exc}") from None
        if not isinstance(self.database, str) or (
                self.database and not self.database.startswith(("postgresql://", "postgres://"))):
            raise ConfigError(f"{CONFIG_FILE}: database: not a postgresql:// URL (empty: SQLite "
                              f"in the data directory)")
        if isinstance(self.events_kept, bool) or not isinstance(self.events_kept, int) \
                or self.events_kept < 0:
            raise ConfigError(f"{CONFIG_FILE}: events_kept: {self.events_kept!r} is not a count")

    @property
    def retention_seconds(self) -> float | None:
        """None: keep finished tasks' output forever."""
        return units.optional_duration(self.retention)

    @property
    def events_max_age_seconds(self) -> float | None:
        """None: events are dropped by count alone."""
        return units.optional_duration(self.events_max_age)

    @property
    def drone_quota_bytes(self) -> int | None:
        return units.optional_size(self.drone_quota)

    @property
    def storage_quota_bytes(self) -> int | None:
        return units.optional_size(self.storage_quota)

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE

    @property
    def key_path(self) -> Path:
        return self.data_dir / KEY_FILE

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def stdin_dir(self) -> Path:
        return self.data_dir / "stdin"

    @classmethod
    def load(cls, data_dir: str | Path) -> RelayConfig:
        """The config of a data dir; unknown keys in relay.toml are kept in ``extra``."""
        root = Path(data_dir).resolve()
        values: dict[str, Any] = {}
        path = root / CONFIG_FILE
        if path.exists():
            try:
                values = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)} - {"data_dir", "extra"}
        kwargs = {k: v for k, v in values.items() if k in known}
        extra = {k: v for k, v in values.items() if k not in known}
        return cls(data_dir=root, extra=extra, **kwargs)

    def save(self) -> None:
        """Write relay.toml with every setting, so the admin sees what can be tuned."""
        lines = ["# dragoon relay settings; times in seconds, sizes in bytes"]
        for f in dataclasses.fields(self):
            if f.name in ("data_dir", "extra"):
                continue
            lines.append(f"{f.name} = {_toml_value(getattr(self, f.name))}")
        for key, value in self.extra.items():
            lines.append(f"{key} = {_toml_value(value)}")
        path = self.data_dir / CONFIG_FILE
        if self.database:
            # The URL may hold the database's password: the file is the relay user's alone.
            path.touch(mode=0o600, exist_ok=True)
            path.chmod(0o600)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {value!r} to relay.toml")
