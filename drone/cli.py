"""``dragoon drone join|run``: a thin layer over drone.join and drone.daemon."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click


def _labels(_ctx: click.Context, _param: click.Parameter, text: str) -> list[str]:
    """``--labels`` by the one rule of shared/spec.py; a refusal is a usage error (exit 2)."""
    from dragoon.shared.spec import SpecError, parse_labels

    try:
        return parse_labels(text)
    except SpecError as exc:
        raise click.BadParameter(exc.problem) from None


@click.group(name="drone")
def drone() -> None:
    """Drone host: join a relay, run the daemon, choose the pilots it obeys."""


def _ca_cert_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--ca-cert", "ca_cert", default=None, metavar="FILE",
                        type=click.Path(dir_okay=False, path_type=Path), help=help_text)


@drone.command()
@click.argument("token")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="The drone's data dir (key, settings, spool, work dirs).")
@click.option("--slots", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="How many tasks run at once.")
@click.option("--labels", default="", callback=_labels,
              help="Comma-separated labels tasks can target, e.g. gpu,a100.")
@_ca_cert_option("CA bundle that signed the relay's TLS certificate; copied into the data "
                 "dir and trusted by every `drone run` after.")
def join(token: str, data_dir: Path, slots: int, labels: list[str],
         ca_cert: Path | None) -> None:
    """Enroll this box with a one-time join TOKEN and pin the relay's task key."""
    from dragoon.drone.join import JoinError
    from dragoon.drone.join import join as do_join

    try:
        joined = do_join(token, data_dir, slots=slots, labels=labels, ca_cert=ca_cert)
    except JoinError as exc:
        click.echo(f"dragoon drone join: {exc}", err=True)
        sys.exit(exc.status)
    except KeyboardInterrupt:  # a join the relay has not accepted is simply run again
        click.echo("\ndragoon drone join: interrupted", err=True)
        sys.exit(130)
    click.echo(f"joined {joined.relay} as drone {joined.name!r}")
    click.echo(f"drone key {joined.fingerprint}; relay task key {joined.relay_key_fingerprint} "
               "pinned")
    click.echo(f"encryption key {joined.x25519_fingerprint}; {joined.pilots} pilot key(s) in "
               f"{data_dir / 'authorized_pilots'}")
    if not joined.bound:
        click.echo(f"no pilot binding in this token: a pilot trusts this drone with "
                   f"`dragoon drones trust {joined.name} {joined.fingerprint}`")
    if joined.pilots == 0:
        click.echo(f"no pilot is authorized yet: add one with `dragoon drone authorize "
                   f"KEYFILE --data {data_dir}`")
    click.echo(f"settings: {data_dir / 'drone.toml'}; start with: dragoon drone run --data "
               f"{data_dir}")


@drone.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="The drone's data dir, as given to `dragoon drone join`.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail too.")
@_ca_cert_option("CA bundle that signed the relay's TLS certificate, for this run "
                 "(instead of drone.toml's ca_cert).")
def run(data_dir: Path, verbose: bool, ca_cert: Path | None) -> None:
    """Run the drone: long-poll the relay, run tasks, ship output; relay errors never stop it."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from dragoon.drone.client import EXIT_TLS
    from dragoon.drone.config import SettingsError
    from dragoon.drone.daemon import run as run_daemon
    from dragoon.shared.errors import DragoonError
    from dragoon.shared.tls import CaCertError

    try:
        run_daemon(data_dir, ca_cert=ca_cert)
    except CaCertError as exc:
        click.echo(f"dragoon drone run: {exc}", err=True)
        sys.exit(EXIT_TLS)
    except (SettingsError, DragoonError, ValueError) as exc:
        click.echo(f"dragoon drone run: {exc}", err=True)
        sys.exit(1)


# ----- the pilots this drone obeys (authorized_pilots): local only, never via the relay -----

_DATA = click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
                     help="The drone's data dir, as given to `dragoon drone join`.")


def _pilots_file(data_dir: Path, verb: str) -> Path:
    """The data dir's authorized_pilots; a dir that is not a drone's is a usage error."""
    from dragoon.drone.state import DataDir

    data = DataDir(data_dir)
    if not data.settings.is_file():
        _usage(verb, f"{data_dir} is not a drone's data dir (no drone.toml; run `dragoon "
                     "drone join` first)")
    return data.authorized_pilots


def _usage(verb: str, message: str) -> NoReturn:
    click.echo(f"dragoon drone {verb}: {message}", err=True)
    sys.exit(2)


def _read_pilots(path: Path, verb: str) -> list[Any]:
    from dragoon.shared.trust import TrustFileError, read_authorized_pilots

    try:
        return read_authorized_pilots(path)
    except TrustFileError as exc:
        click.echo(f"dragoon drone {verb}: {exc}", err=True)
        sys.exit(1)


@drone.command()
@click.argument("key", metavar="KEYFILE|'KEYLINE'")
@_DATA
def authorize(key: str, data_dir: Path) -> None:
    """Let the pilot KEY (a public key file, or one quoted key line) give this drone orders.

    Edits DATA/authorized_pilots on this box; the relay can't add to it.
    """
    from dragoon.shared.trust import TrustFileError, pilot_keys_from, write_authorized_pilots

    path = _pilots_file(data_dir, "authorize")
    try:
        given = pilot_keys_from(key)
    except TrustFileError as exc:
        _usage("authorize", str(exc))
    keys = _read_pilots(path, "authorize")
    new = [k for k in given if k not in keys]
    if new:
        write_authorized_pilots(path, [*keys, *new])
    for k in given:
        said = "authorized" if k in new else "already authorized"
        click.echo(f"{said}: {k.fingerprint} {k.key_type} {k.comment}".rstrip())


@drone.command()
@click.argument("key", metavar="FINGERPRINT|KEYFILE")
@_DATA
def revoke(key: str, data_dir: Path) -> None:
    """Stop obeying the pilot KEY (its SHA256: fingerprint, or its public key file)."""
    from dragoon.shared.trust import TrustFileError, pilot_keys_from, write_authorized_pilots

    path = _pilots_file(data_dir, "revoke")
    if key.startswith("SHA256:"):
        wanted = {key}
    else:
        try:
            wanted = {k.fingerprint for k in pilot_keys_from(key)}
        except TrustFileError as exc:
            _usage("revoke", str(exc))
    keys = _read_pilots(path, "revoke")
    gone = [k for k in keys if k.fingerprint in wanted]
    if not gone:
        _usage("revoke", f"{', '.join(sorted(wanted))} is not in {path}")
    write_authorized_pilots(path, [k for k in keys if k not in gone])
    for k in gone:
        click.echo(f"revoked: {k.fingerprint} {k.key_type} {k.comment}".rstrip())


@drone.command()
@_DATA
def pilots(data_dir: Path) -> None:
    """List the pilot keys this drone obeys: fingerprint, type, comment."""
    path = _pilots_file(data_dir, "pilots")
    for k in _read_pilots(path, "pilots"):
        click.echo(f"{k.fingerprint} {k.key_type} {k.comment}".rstrip())
