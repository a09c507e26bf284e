"""``open_stores(config)``: where a relay keeps task output, blobs and stdin.

Files in the data dir (relay/output.py, relay/blobs.py, relay/stdin.py) when
``config.database`` is empty, as a relay on SQLite always has; rows in PostgreSQL
(relay/pg_output.py, relay/pg_blobs.py, relay/pg_stdin.py) when it is a PostgreSQL URL,
so that a relay on PostgreSQL keeps everything in the database and any replica serves any
task's output and files. Both kinds answer the same calls, so routes do not know which
they have. The PostgreSQL tables come from relay/migrations/postgresql/0002_files.sql.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from dragoon.relay.blobs import BlobStore
from dragoon.relay.config import RelayConfig
from dragoon.relay.output import OutputStore
from dragoon.relay.retention import FileSpace, Space
from dragoon.relay.stdin import StdinStore

# The PostgreSQL stores are imported only for a relay that uses them: a relay on SQLite
# needs no psycopg.
LogStore = OutputStore  # | PgOutputStore: the same calls (relay/pg_output.py)
Blobs = BlobStore  # | PgBlobStore
Stdin = StdinStore  # | PgStdinStore


@dataclass
class Stores:
    output: LogStore
    blobs: Blobs
    stdin: Stdin

    def close(self) -> None:
        self.output.close()
        self.stdin.close()
        self.blobs.close()


def is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class StoreError(Exception):
    """The configured database cannot hold the stores (it does not answer): one clear line."""


def masked(url: str) -> str:
    """The URL with its password replaced, fit for a log line or an error."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _reachable(url: str) -> None:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"the database {masked(url)} does not answer: {reason}") from None


def database_url(config: RelayConfig) -> str:
    """``config.database``: empty for SQLite and files, else a PostgreSQL URL."""
    url = str(getattr(config, "database", "") or "")
    if url and not is_postgresql(url):
        raise ValueError("database must be empty (SQLite and files in the data dir) or a "
                         "postgresql:// URL")
    return url


@contextlib.contextmanager
def open_space(config: RelayConfig) -> Iterator[Space]:
    """Where retention deletes the bytes of pruned records (relay/retention.py): the files,
    or the rows of a relay on PostgreSQL (relay/pg_retention.py), closed after the pass."""
    url = database_url(config)
    if not url:
        yield FileSpace(config.logs_dir, config.blobs_dir)
        return
    from dragoon.relay.pg_retention import PgSpace

    space = PgSpace(url)
    try:
        yield space
    finally:
        space.close()


def open_stores(config: RelayConfig) -> Stores:
    """The stores for ``config``: files unless its ``database`` is a PostgreSQL URL."""
    url = database_url(config)
    if not url:
        return Stores(output=OutputStore(config.logs_dir, config.output_cap),
                      blobs=BlobStore(config.blobs_dir),
                      stdin=StdinStore(config.stdin_dir, config.stdin_window))
    from dragoon.relay.pg_blobs import PgBlobStore
    from dragoon.relay.pg_output import PgOutputStore
    from dragoon.relay.pg_stdin import PgStdinStore

    _reachable(url)  # a clear error now, not a pool that retries in the background
    output = PgOutputStore(url, config.output_cap)
    try:
        blobs = PgBlobStore(url)
        try:
            stdin = PgStdinStore(url, config.stdin_window)
        except BaseException:
            blobs.close()
            raise
    except BaseException:
        output.close()
        raise
    return Stores(output=output, blobs=blobs, stdin=stdin)  # type: ignore[arg-type]
