"""``dragoon relay …``: admin commands that work on the data directory, and ``serve``.

A thin layer: each command parses flags and calls the library (config, db,
login, enroll, server). Errors are one line on stderr and exit code 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
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
    if not config.key_path.exists() or not config.db_path.exists():
        fail(f"{data_dir} is not a relay data directory (run dragoon relay init --data DIR)")
    return config


@click.group(name="relay", context_settings={"help_option_names": ["-h", "--help"]})
def relay() -> None:
    """Relay host: init a data directory, add operators, enroll drones, serve, back up."""


@relay.command()
@DATA
@click.option("--url", default=None, help="The public URL drones and pilots use (join tokens).")
def init(data_dir: Path, url: str | None) -> None:
    """Create the data directory: database, task-signing key, relay.toml. Safe to re-run."""
    from dragoon.relay import db
    from dragoon.relay.config import RelayConfig
    from dragoon.shared.keys import PrivateKey

    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    config = RelayConfig.load(data_dir)
    if url is not None:
        config.url = url.rstrip("/")
    if not config.key_path.exists():
        PrivateKey.generate_ed25519("dragoon-relay").save(config.key_path)
    config.save()
    conn = db.connect(config.db_path)
    conn.close()
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
    from dragoon.relay import db, login
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
    conn = db.connect(config.db_path)
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

    from dragoon.relay import db
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
    conn = db.connect(config.db_path)
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
def serve(data_dir: Path, bind: str, tls_cert: Path | None, tls_key: Path | None,
          insecure: bool, log_level: str) -> None:
    """Run the relay until SIGTERM or Ctrl-C."""
    from dragoon.relay.server import ServeError, ServeOptions, check_options
    from dragoon.relay.server import serve as run

    options = ServeOptions(bind=bind, tls_cert=tls_cert, tls_key=tls_key, insecure=insecure,
                           log_level=log_level)
    try:
        check_options(options)
        config = _initialised(data_dir)
        run(config, options)
    except ServeError as exc:
        fail(str(exc))


# ----- storage: gc, backup, restore (docs/operations.md) -----

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

    from dragoon.relay import db, quota, retention, units
    from dragoon.relay.stores import open_space

    config = _initialised(data_dir)
    try:
        keep = (config.retention_seconds if older_than is None
                else units.optional_duration(older_than))
    except ValueError as exc:
        fail(f"--older-than: {exc}")
    cutoff = None if keep is None else time.time() - keep
    conn = db.connect(config.db_path)

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
