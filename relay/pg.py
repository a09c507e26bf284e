"""PostgreSQL behind the interface the relay's modules use of ``sqlite3.Connection``.

The modules keep one SQL for both engines (docs/storage.md): ``?`` placeholders, which
``PgConnection`` turns into psycopg's ``%s`` outside string literals, quoted names and
comments (and every literal ``%`` into ``%%``, since psycopg reads the whole text for
its own placeholders); rows that answer ``row[0]``, ``row["col"]``, ``row.keys()`` and
``dict(row)`` as ``sqlite3.Row`` does; and the few places where SQLite is lenient and
PostgreSQL is not are smoothed here, once:

- a Python ``bool`` is sent as the integer SQLite would store (the schema's flags are
  integers, as in SQLite, so the SQL compares them with ``= 1`` on both), and an ``int``
  beyond 64 bits is refused with ``OverflowError``, as sqlite3 refuses it;
- a ``NUMERIC`` result (PostgreSQL's ``SUM`` of integers) is read back as ``int`` (or
  ``float`` when it has a fraction), as SQLite answers it.

The connection is in autocommit: a read outside a transaction sees the latest commit,
and ``begin_write`` opens a transaction that first takes one advisory lock, so write
transactions run one at a time across every relay process on the database, as
``BEGIN IMMEDIATE`` makes them in SQLite (docs/storage.md says why).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.adapt import Loader
from psycopg.rows import RowMaker

#: The advisory lock every write transaction takes (``pg_advisory_xact_lock``): one
#: constant for the whole relay, so that writes serialise as SQLite's do. (0x647261676f6f6e
#: is "dragoon" in ASCII.)
WRITE_LOCK: Final = 0x647261676F6F6E

# One token at a time: a string literal (with '' inside), a quoted name, a line or block
# comment, a dollar-quoted string, a cast (``::``), a named parameter, or one character.
_TOKEN: Final = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|\$([A-Za-z_]*)\$.*?\$\1\$"""
    r"""|::|:([A-Za-z_][A-Za-z0-9_]*)|.""",
    re.DOTALL,
)


@functools.lru_cache(maxsize=2048)
def translate(sql: str, named: bool = False) -> str:
    """``?`` → ``%s`` outside literals, names and comments (with ``named``, ``:name`` →
    ``%(name)s``, as sqlite3 takes a dict); every ``%`` → ``%%``."""
    out: list[str] = []
    for match in _TOKEN.finditer(sql):
        piece = match.group(0)
        if piece == "?":
            out.append("%s")
        elif named and match.group(2):
            out.append(f"%({match.group(2)})s")
        else:
            out.append(piece.replace("%", "%%"))
    return "".join(out)


class Row(tuple[Any, ...]):
    """A result row as ``sqlite3.Row`` offers it: by position, by column name, ``keys()``."""

    _index: dict[str, int]

    def __new__(cls, values: Iterable[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._index[key])
            except KeyError:
                raise IndexError(f"No item with that key: {key!r}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    names = [column.name for column in cursor.description or ()]
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)  # a name given twice is the first, as in sqlite3.Row

    def make(values: Sequence[Any]) -> Row:
        return Row(values, index)

    return make


class _NumericLoader(Loader):
    """``NUMERIC`` as SQLite answers it: an ``int`` when whole, else a ``float``."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        try:
            return int(text)
        except ValueError:
            return float(text)


_INT64: Final = range(-(2**63), 2**63)


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value not in _INT64:
        # As sqlite3 refuses it (relay/db.py answers 422): PostgreSQL would take it as a
        # NUMERIC and compare, where SQLite cannot hold it.
        raise OverflowError("Python int too large to convert to a 64-bit integer")
    return value


def _params(params: Sequence[Any] | Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
    if isinstance(params, Mapping):
        return {k: _param(v) for k, v in params.items()}
    return tuple(_param(p) for p in params)


class PgConnection:
    """One psycopg connection (autocommit) with the ``sqlite3.Connection`` calls we use."""

    backend: Final = "postgresql"

    def __init__(self, raw: psycopg.Connection[Row]) -> None:
        self.raw = raw

    @classmethod
    def connect(cls, url: str) -> PgConnection:
        raw: psycopg.Connection[Row] = psycopg.connect(
            url, autocommit=True, row_factory=_row_factory,
            application_name="dragoon-relay",
        )
        raw.adapters.register_loader("numeric", _NumericLoader)
        return cls(raw)

    def execute(self, sql: str,
                params: Sequence[Any] | Mapping[str, Any] = ()) -> psycopg.Cursor[Row]:
        named = isinstance(params, Mapping)
        return self.raw.execute(translate(sql, named), _params(params))  # type: ignore[arg-type]

    def executemany(self, sql: str,
                    seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> psycopg.Cursor[Row]:
        batch = [_params(p) for p in seq]
        cursor = self.raw.cursor()
        if batch:
            named = isinstance(batch[0], dict)
            cursor.executemany(translate(sql, named), batch)  # type: ignore[arg-type]
        return cursor

    def script(self, sql: str) -> None:
        """Run a whole script (a migration), statements and all, as it is written."""
        self.raw.execute(sql)  # no parameters: psycopg looks for no placeholders

    def begin_write(self) -> None:
        """``BEGIN`` and the write lock: the transaction waits for every other writer."""
        # One round trip: both statements in one simple-protocol message.
        self.raw.execute(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK:d})")

    @contextlib.contextmanager
    def after_writers(self) -> Iterator[None]:
        """Read behind every write transaction in flight (the write lock's shared side):
        a sequence moves at ``nextval``, before its row commits, so an unlocked read of
        one may name an id no reader can see yet. Inside a transaction already, as is."""
        if self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            yield
            return
        self.raw.execute(f"BEGIN; SELECT pg_advisory_xact_lock_shared({WRITE_LOCK:d})")
        try:
            yield
        finally:
            self.raw.execute("COMMIT")

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        self.raw.execute("ROLLBACK")

    @property
    def broken(self) -> bool:
        """The server went away (restarted, failed over): this connection is done for."""
        return bool(self.raw.closed or self.raw.broken)

    def close(self) -> None:
        self.raw.close()


def masked(url: str) -> str:
    """The URL with any password replaced by ``***``: what logs and messages show."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://***"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))
