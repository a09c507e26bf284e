"""``dragoon relay …``: admin commands that work on the data directory, and ``serve``.

A thin layer: each command parses flags and calls the library (config, db,
login, enroll, server). Errors are one line on stderr and exit code 1.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from collections.abc import Callable

    from dragoon.relay.config import RelayConfig
    from dragoon.relay.retention import Report

T = TypeVar("T")

DATA = click.option(
    "--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    envvar="DRAGOON_RELAY_DATA", help="The relay's data directory.",
)


DATABASE = click.option(
    "--database", default=None, metavar="URL", envvar="DRAGOON_RELAY_DATABASE",
    help="A postgresql:// URL: keep the relay's state there instead of relay.db in the "
         "data directory (default: relay.toml's database). The environment variable "
         "DRAGOON_RELAY_DATABASE keeps a password out of the process list.",
)


def fail(message: str) -> NoReturn:
    click.echo(f"dragoon relay: {message}", err=True)
    sys.exit(1)


def _rule(parse: Callable[[str], T]) -> Callable[[click.Context, click.Parameter, str], T]:
    """A click callback applying one parser of shared/spec.py: a refusal is a usage error."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str) -> T:
        from dragoon.shared.spec import SpecError

        try:
            return parse(value)
        except SpecError as exc:
            raise click.BadParameter(exc.problem) from None

    return callback


def _drone_name(text: str) -> str:
    from dragoon.shared.spec import parse_drone_name

    return parse_drone_name(text)


def _labels(text: str) -> list[str]:
    from dragoon.shared.spec import parse_labels

    return parse_labels(text)


def _ttl(text: str) -> int:
    from dragoon.shared.spec import parse_duration

    return parse_duration(text, field="ttl")


def _initialised(data_dir: Path) -> RelayConfig:
    from dragoon.relay.config import ConfigError, RelayConfig

    try:
        config = RelayConfig.load(data_dir)
    except ConfigError as exc:
        fail(str(exc))
    if not config.key_path.exists() or (not config.database and not config.db_path.exists()):
        fail(f"{data_dir} is not a relay data directory (run dragoon relay init --data DIR)")
    return config


def _with_database(config: RelayConfig, database: str | None) -> RelayConfig:
    """``--database`` over relay.toml's, checked as relay.toml's is."""
    if database is None:
        return config
    from dragoon.relay.pg import is_postgresql

    if database and not is_postgresql(database):
        fail("--database: not a postgresql:// URL (leave it out for SQLite in the data dir)")
    config.database = database
    return config


def _connect(config: RelayConfig) -> Any:
    """The relay's database, migrated; a refusal (server down, wrong password, a newer
    schema) is one line naming the database with its password masked."""
    from dragoon.relay import db

    with _database_errors(config):
        return db.open_connection(config)


@contextlib.contextmanager
def _database_errors(config: RelayConfig) -> Iterator[None]:
    from dragoon.relay import db

    try:
        yield
    except db.SchemaTooNew as exc:
        fail(str(exc))
    except (*db.OperationalError, ValueError) as exc:
        if not config.database:
            raise
        from dragoon.relay.pg import masked

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail(f"cannot use the database {masked(config.database)}: {reason}")


@click.group(name="relay", context_settings={"help_option_names": ["-h", "--help"]})
def relay() -> None:
    """Relay host: init a data directory, add operators, enroll drones, serve, back up."""


@relay.command()
@DATA
@click.option("--url", default=None, help="The public URL drones and pilots use (join tokens).")
@DATABASE
def init(data_dir: Path, url: str | None, database: str | None) -> None:
    """Create the data directory: database, task-signing key, relay.toml. Safe to re-run.

    With --database URL the relay's state goes to that PostgreSQL database (created
    empty by its admin; this migrates it), and relay.toml keeps the URL.
    """
    from dragoon.relay.config import ConfigError, RelayConfig
    from dragoon.shared.keys import PrivateKey

    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    try:
        config = _with_database(RelayConfig.load(data_dir), database)
    except ConfigError as exc:
        fail(str(exc))
    if url is not None:
        config.url = url.rstrip("/")
    conn = _connect(config)  # before anything is written: a bad URL leaves the dir as it was
    conn.close()
    if not config.key_path.exists():
        PrivateKey.generate_ed25519("dragoon-relay").save(config.key_path)
    config.save()
    for sub in (config.logs_dir, config.blobs_dir):
        sub.mkdir(mode=0o700, exist_ok=True)
    from dragoon.shared.keys import load_private_key_file

    fingerprint = load_private_key_file(config.key_path).public_key.fingerprint
    click.echo(f"relay data directory ready: {config.data_dir}")
    click.echo(f"task-signing key: {fingerprint}")


@relay.command("add-operator")
@DATA
@click.option("--name", required=True, help="The pilot's name.")
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The pilot's SSH public key file (ed25519, RSA or ECDSA).")
@click.option("--no-qr", is_flag=True, help="Do not draw the QR code.")
def add_operator(data_dir: Path, name: str, key_file: Path, no_qr: bool) -> None:
    """Register a pilot: prints the TOTP secret, its otpauth:// URI and a QR code.

    For an existing NAME this replaces its key and TOTP secret and ends its sessions.
    """
    from dragoon.relay import login
    from dragoon.shared.errors import KeyLoadError
    from dragoon.shared.keys import load_public_key_file
    from dragoon.shared.spec import SpecError, check_drone_name

    config = _initialised(data_dir)
    try:
        check_drone_name(name, field="pilot name")  # a pilot's name follows a drone's rule
    except SpecError as exc:
        fail(str(exc))
    try:
        key = load_public_key_file(key_file)
    except KeyLoadError as exc:
        fail(str(exc))
    conn = _connect(config)
    try:
        secret = login.add_operator(conn, name, key)
    except ValueError as exc:
        fail(str(exc))
    finally:
        conn.close()
    uri = login.totp_uri(secret, name)
    click.echo(f"pilot {name} added with key {key.fingerprint}")
    click.echo(f"TOTP secret: {secret}")
    click.echo(f"otpauth URI: {uri}")
    if not no_qr:
        _print_qr(uri)


def _print_qr(uri: str) -> None:
    import io

    import qrcode

    code = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_L)
    code.add_data(uri)
    code.make(fit=True)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    click.echo("Scan with an authenticator app:")
    click.echo(out.getvalue(), nl=False)


@relay.command()
@DATA
@click.option("--drone", required=True, callback=_rule(_drone_name),
              help="The new drone's name.")
@click.option("--labels", default="", callback=_rule(_labels),
              help="Comma-separated labels, e.g. gpu,a100.")
@click.option("--ttl", default="1h", show_default=True, callback=_rule(_ttl),
              help="How long the token stays valid (90s, 15m, 1h30m, 7d; at most 30d).")
@click.option("--url", default=None, help="Relay URL for the token (default: relay.toml's url).")
@click.option("--replace", is_flag=True,
              help="The token may replace a drone that holds the name (its tasks end lost).")
@click.option("--authorize", "authorize", multiple=True, metavar="FILE",
              help="A pilot public key file the drone is to obey (repeatable); seeds its "
                   "authorized_pilots.")
def enroll(data_dir: Path, drone: str, labels: list[str], ttl: int, url: str | None,
           replace: bool, authorize: tuple[str, ...]) -> None:
    """Mint a one-time join token; prints it alone on stdout.

    No pilot is behind it, so it carries no enrollment binding: the drone obeys only
    the --authorize keys, and a pilot trusts it with `dragoon drones trust NAME
    FINGERPRINT` (docs/security.md, "Trust roots").
    """
    import dataclasses

    from dragoon.relay import enroll as enrollment
    from dragoon.relay.errors import ApiError
    from dragoon.shared.enrollment import JoinToken
    from dragoon.shared.keys import load_private_key_file
    from dragoon.shared.trust import TrustFileError, pilot_keys_from

    pilots: list[str] = []
    for given in authorize:
        try:
            pilots += [key.openssh() for key in pilot_keys_from(given)
                       if key.openssh() not in pilots]
        except TrustFileError as exc:
            click.echo(f"dragoon relay: --authorize {exc}", err=True)
            sys.exit(2)
    config = _initialised(data_dir)
    relay_url = (url or config.url).rstrip("/")
    if not relay_url:
        fail("no relay URL: pass --url, or set one with dragoon relay init --url")
    fingerprint = load_private_key_file(config.key_path).public_key.fingerprint
    conn = _connect(config)
    try:
        token, _expires = enrollment.mint(
            conn, relay_url=relay_url, relay_key=fingerprint, drone=drone,
            labels=labels, ttl=ttl, by="admin", replace=replace,
        )
    except ApiError as exc:
        fail(exc.detail)
    finally:
        conn.close()
    # The v2 form, with the --authorize keys; the admin's token never has a binding key.
    click.echo(dataclasses.replace(JoinToken.decode(token), pilots=tuple(pilots),
                                   labels=tuple(labels)).encode())


@relay.command()
@DATA
@click.option("--bind", default="127.0.0.1:8787", show_default=True,
              help="HOST:PORT (port 0: any).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--insecure", is_flag=True, help="Allow plain HTTP on a non-loopback address.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@DATABASE
def serve(data_dir: Path, bind: str, tls_cert: Path | None, tls_key: Path | None,
          insecure: bool, log_level: str, database: str | None) -> None:
    """Run the relay until SIGTERM or Ctrl-C."""
    from dragoon.relay.server import ServeError, ServeOptions, check_options
    from dragoon.relay.server import serve as run

    options = ServeOptions(bind=bind, tls_cert=tls_cert, tls_key=tls_key, insecure=insecure,
                           log_level=log_level)
    try:
        check_options(options)
        config = _with_database(_initialised(data_dir), database)
        _connect(config).close()  # reachable and migrated, or one line now
        run(config, options)
    except ServeError as exc:
        fail(str(exc))


# ----- storage: migrate, gc, backup, restore (docs/operations.md, docs/storage.md) -----

@relay.command()
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="DRAGOON_RELAY_DATA", default=None,
              help="The relay's data directory (not with --from).")
@DATABASE
@click.option("--from", "source", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="DATA_DIR",
              help="Move this SQLite relay's state into the database given by --to.")
@click.option("--to", "target", default=None, metavar="URL", envvar="DRAGOON_MIGRATE_TO",
              help="The empty PostgreSQL database to move into (postgresql://…); "
                   "DRAGOON_MIGRATE_TO, or a libpq password file, keeps a password out of "
                   "the process list.")
def migrate(data_dir: Path | None, database: str | None, source: Path | None,
            target: str | None) -> None:
    """Bring the relay's database to this relay's schema (serve does it too, at start),
    or, with --from and --to, move a SQLite relay's state into PostgreSQL.

    Safe to run while other replicas serve or start: each step runs once, under the
    write lock, and a database from a newer relay is refused untouched.
    """
    from dragoon.relay import db, pg_migrate
    from dragoon.relay.pg import PgConnection, masked

    if source is not None or target is not None:
        _move_to_postgresql(source, target)
        return
    if data_dir is None:
        fail("--data DIR (or DRAGOON_RELAY_DATA), or --from DATA_DIR --to postgresql://…")
    config = _with_database(_initialised(data_dir), database)
    if not config.database:
        before = _sqlite_version(config)
        _connect(config).close()
        after = db.SCHEMA_VERSION
        click.echo(f"relay.db: schema {before} -> {after}" if before != after
                   else f"relay.db: schema {after}, up to date")
        return
    with _database_errors(config):
        conn = PgConnection.connect(config.database)
        try:
            ran = pg_migrate.migrate(conn)
            now = pg_migrate.version(conn)
        finally:
            conn.close()
    done = f"applied {', '.join(map(str, ran))}" if ran else "up to date"
    click.echo(f"{masked(config.database)}: schema {now}, {done}")


def _move_to_postgresql(source: Path | None, target: str | None) -> None:
    from dragoon.relay import pg_import
    from dragoon.relay.backup import BackupError
    from dragoon.relay.config import RelayConfig
    from dragoon.relay.pg import masked

    if source is None or target is None:
        fail("--from DATA_DIR and --to postgresql://… go together")
    if not target.startswith(("postgresql://", "postgres://")):
        fail(f"--to: {masked(target)} is not a postgresql:// URL")
    config = _initialised(source)
    with _database_errors(RelayConfig(data_dir=source, database=target)):
        try:
            summary = pg_import.import_data_dir(config, target)
        except (pg_import.MigrateRefused, BackupError, OSError) as exc:
            fail(str(exc))
    for line in pg_import.describe(summary):
        click.echo(line)
    click.echo(f"{source}/relay.toml now uses {masked(target)}; relay.db, logs/ and blobs/ "
               "are left as they were (set database = \"\" to go back)")


def _sqlite_version(config: RelayConfig) -> int:
    import sqlite3

    conn = sqlite3.connect(config.db_path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


@relay.command()
@DATA
@click.option("--older-than", "older_than", default=None, metavar="DURATION",
              help="Prune tasks finished longer ago than this (default: relay.toml's retention).")
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def gc(data_dir: Path, older_than: str | None, dry_run: bool, as_json: bool) -> None:
    """Prune old tasks' output (their records stay) and unused blobs.

    Safe while the relay serves: short transactions, files deleted after they commit.
    """
    import json
    import time

    from dragoon.relay import quota, retention, units
    from dragoon.relay.stores import open_space

    config = _initialised(data_dir)
    try:
        keep = (config.retention_seconds if older_than is None
                else units.optional_duration(older_than))
    except ValueError as exc:
        fail(f"--older-than: {exc}")
    cutoff = None if keep is None else time.time() - keep
    conn = _connect(config)

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        return fn(conn, *args)

    try:
        if not dry_run:
            quota.backfill_logs(call, config.logs_dir)
        with open_space(config) as space:  # files, or rows on PostgreSQL
            report = retention.collect(call, config.logs_dir, config.blobs_dir, cutoff=cutoff,
                                       dry_run=dry_run, space=space)
        stats = retention.storage_stats(conn)
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "storage": stats}, sort_keys=True))
        return
    _print_gc(report, None if keep is None else older_than or str(config.retention), stats)


def _print_gc(report: Report, age: str | None, stats: dict[str, Any]) -> None:
    from dragoon.relay.units import format_size as size

    verb = "would delete" if report.dry_run else "deleted"
    if age is None:
        click.echo('retention is off (retention = "none"): pass --older-than to prune tasks')
    else:
        click.echo(f"tasks finished more than {age} ago: {report.tasks} "
                   f"(their records are kept as tombstones)")
    click.echo(f"{verb}: {report.log_files} log files, {size(report.log_bytes)}; "
               f"{report.artifacts} artifact records, {report.messages} messages, "
               f"{report.fetches} fetches")
    click.echo(f"{verb}: {report.blobs} blobs, {size(report.blob_bytes)}"
               f" ({report.shared_blobs} kept: still used by kept records)")
    click.echo(f"{verb}: {report.orphan_files} orphan files, {size(report.orphan_bytes)}")
    click.echo(f"{verb} in all: {size(report.bytes)}")
    if report.missing:
        click.echo(f"already gone: {report.missing} files")
    click.echo(f"stored now: {size(int(stats['bytes']))}")


@relay.command()
@DATA
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
def backup(data_dir: Path, archive: Path) -> None:
    """Write a consistent copy of the data directory to ARCHIVE.

    ARCHIVE is a tar file of mode 0600 (gzip-compressed when it ends in .gz or .tgz);
    taking it is safe while the relay serves. It holds the relay's key and the pilots'
    TOTP secrets: keep it private.
    """
    from dragoon.relay import backup as archiving
    from dragoon.relay import stores
    from dragoon.relay.units import format_size

    config = _initialised(data_dir)
    if stores.database_url(config):
        # The archive would hold no logs, blobs or records: they are all in the database.
        fail("this relay keeps its records, logs and files in PostgreSQL: back it up with "
             "pg_dump (docs/storage.md); `relay backup` copies a data dir")
    try:
        summary = archiving.backup(config, archive.absolute())
    except (archiving.BackupError, OSError) as exc:
        fail(str(exc))
    for name in summary.missing:
        click.echo(f"dragoon relay: warning: {name} was removed during the backup", err=True)
    click.echo(f"backup written: {archive} (database {format_size(summary.db_bytes)}, "
               f"{summary.logs} logs {format_size(summary.log_bytes)}, "
               f"{summary.blobs} blobs {format_size(summary.blob_bytes)}, "
               f"{summary.files} other files)")


@relay.command()
@DATA
@click.argument("archive", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def restore(data_dir: Path, archive: Path) -> None:
    """Unpack a backup ARCHIVE into a new, empty data directory."""
    from dragoon.relay import backup as archiving

    try:
        summary = archiving.restore(archive, data_dir.absolute())
    except (archiving.BackupError, OSError) as exc:
        fail(str(exc))
    click.echo(f"restored into {data_dir}: {summary.logs} logs, {summary.blobs} blobs, "
               f"{summary.files} other files; start it with "
               f"dragoon relay serve --data {data_dir}")
