"""``dragoon relay …``: admin commands that work on the data directory, and ``serve``.

A thin layer: each command parses flags and calls the library (config, db,
login, enroll, server). Errors are one line on stderr and exit code 1.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from dragoon.relay.config import RelayConfig

DATA = click.option(
    "--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    envvar="DRAGOON_RELAY_DATA", help="The relay's data directory.",
)


def fail(message: str) -> NoReturn:
    click.echo(f"dragoon relay: {message}", err=True)
    sys.exit(1)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 1h, 7d")
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(match.group(1)) * factor


def _initialised(data_dir: Path) -> RelayConfig:
    from dragoon.relay.config import RelayConfig

    config = RelayConfig.load(data_dir)
    if not config.key_path.exists() or not config.db_path.exists():
        fail(f"{data_dir} is not a relay data directory (run dragoon relay init --data DIR)")
    return config


@click.group(name="relay", context_settings={"help_option_names": ["-h", "--help"]})
def relay() -> None:
    """Relay host: init a data directory, add operators, enroll drones, serve."""


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
    from dragoon.relay.enroll import NAME
    from dragoon.shared.errors import KeyLoadError
    from dragoon.shared.keys import load_public_key_file

    config = _initialised(data_dir)
    if not NAME.fullmatch(name):
        fail("a pilot name is 1-63 of A-Z a-z 0-9 . _ -")
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
@click.option("--drone", required=True, help="The new drone's name.")
@click.option("--labels", default="", help="Comma-separated labels, e.g. gpu,a100.")
@click.option("--ttl", default="1h", show_default=True, help="How long the token stays valid.")
@click.option("--url", default=None, help="Relay URL for the token (default: relay.toml's url).")
@click.option("--replace", is_flag=True,
              help="The token may replace a drone that holds the name (its tasks end lost).")
def enroll(data_dir: Path, drone: str, labels: str, ttl: str, url: str | None,
           replace: bool) -> None:
    """Mint a one-time join token; prints it alone on stdout."""
    from dragoon.relay import db
    from dragoon.relay import enroll as enrollment
    from dragoon.relay.errors import ApiError
    from dragoon.shared.keys import load_private_key_file

    config = _initialised(data_dir)
    relay_url = (url or config.url).rstrip("/")
    if not relay_url:
        fail("no relay URL: pass --url, or set one with dragoon relay init --url")
    fingerprint = load_private_key_file(config.key_path).public_key.fingerprint
    conn = db.connect(config.db_path)
    try:
        token, _expires = enrollment.mint(
            conn, relay_url=relay_url, relay_key=fingerprint, drone=drone,
            labels=[x for x in labels.split(",") if x.strip()], ttl=parse_duration(ttl),
            by="admin", replace=replace,
        )
    except ApiError as exc:
        fail(exc.detail)
    finally:
        conn.close()
    click.echo(token)


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
