"""``dragoon login`` and ``dragoon logout``."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import click
from dragoon.cockpit.cli import exit_codes as X
from dragoon.cockpit.cli._common import (
    Fail,
    PilotCommand,
    pilot_options,
    run_async,
    tls_verify,
)
from dragoon.cockpit.safe_text import clean

if TYPE_CHECKING:
    from dragoon.cockpit.client.config import StoredSession


async def log_in(*, relay: str | None, key: str | None, ca_cert: str | None,
                 totp: Callable[[], str] | str,
                 env: Mapping[str, str] = os.environ) -> StoredSession:
    """Log in and keep the session (0600) where every other verb finds it.

    ``totp`` may be a callable, so the code is asked for only once the key
    loaded (a wrong key path should not cost the pilot a TOTP code).
    """
    from dragoon.cockpit.client import RelayClient
    from dragoon.cockpit.client.config import (
        PilotConfigError,
        SessionStore,
        StoredSession,
        resolve,
    )
    from dragoon.cockpit.client.identity import signer_for

    settings = resolve(relay=relay, key=key, ca_cert=ca_cert, env=env)
    # Logging in again after the session expired (or was revoked): the relay, key and CA of
    # the last login, unless given anew, as every other verb takes them. A session file that
    # cannot be read is what a login replaces: it must not stand in the way.
    try:
        last = SessionStore(env).load()
    except PilotConfigError:
        last = None
    relay_url = settings.relay or (last.relay if last else None)
    if relay_url is None:
        raise Fail("no relay URL: pass --relay URL, set DRAGOON_RELAY, or put relay = "
                   "\"URL\" in the config file", X.USAGE)
    same_relay = last is not None and last.relay == relay_url
    key_path = settings.key or (last.key if same_relay and last else None)
    public_key = last.public_key if same_relay and last and key_path is None else None
    ca_file = settings.ca_cert or (last.ca_cert if same_relay and last else None)
    signer = signer_for(key_path, public_key=public_key, env=env)
    code = (totp() if callable(totp) else totp).strip()
    if not code.isdigit() or len(code) not in (6, 8):
        raise Fail("the TOTP code must be 6 digits", X.USAGE)
    from dragoon.cockpit.client import RelayError
    from dragoon.cockpit.client.pilot_key import load_or_make_pilot_key, publication

    # Made (or read) before the login: a key file others can read stops here, not later.
    pilot_key = load_or_make_pilot_key(env)
    async with RelayClient(relay_url, signer=signer, verify=tls_verify(ca_file),
                           env=env) as client:
        session = await client.login(totp=code)
        stored = StoredSession(
            relay=relay_url, token=session.token, expires_at=session.expires_at,
            pilot=session.pilot, fingerprint=session.fingerprint, key=key_path,
            public_key=signer.public_key.openssh(with_comment=False), ca_cert=ca_file,
        )
        SessionStore(env).save(stored)
        # The pilot's encryption key, certified by the SSH key, for the drones and the other
        # pilots to encrypt for (cockpit/client/pilot_key.py); the private half stays here.
        body = await asyncio.to_thread(publication, signer, pilot_key)
        try:
            await client.publish_pilot_key(**body)
        except RelayError as exc:
            raise Fail(f"logged in, but the relay did not take this pilot's encryption key "
                       f"({exc.detail}); the next command that needs it sends it again",
                       X.FAILURE) from None
    return stored


def read_totp() -> str:
    """The TOTP code: asked on the terminal without echo, or one line read from stdin.

    A script pipes the code in (``oathtool … | dragoon login``); getpass would
    read it too, but with a warning, and click would turn Ctrl-C into "Aborted!".
    """
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line.strip():
            raise Fail("no TOTP code: stdin is not a terminal and gave no line "
                       "(pipe the code in, or pass --totp CODE)", X.USAGE)
        return line
    import getpass

    from dragoon.cockpit.client.prompt import interruptible

    try:
        with interruptible():
            return getpass.getpass("TOTP code: ", stream=sys.stderr)
    except EOFError:
        click.echo(err=True)
        raise Fail("no TOTP code given", X.USAGE) from None


@click.command(cls=PilotCommand)
@pilot_options
@click.option("--totp", metavar="CODE", default=None,
              help="The current TOTP code; asked for without echo when not given.")
def login(relay: str | None, key: str | None, ca_cert: str | None, totp: str | None) -> None:
    """Log in to the relay with your SSH key and a TOTP code.

    The session token is kept (mode 0600) under your state directory; every
    other verb uses it, with the relay and key that logged in.
    """

    def ask() -> str:
        return totp if totp is not None else read_totp()

    async def go() -> None:
        from dragoon.cockpit.cli.render import relative_time

        session = await log_in(relay=relay, key=key, ca_cert=ca_cert, totp=ask)
        click.echo(clean(f"logged in to {session.relay} as {session.pilot or '?'} "
                         f"with {session.fingerprint}; session ends "
                         f"{relative_time(session.expires_at)}"), err=True)

    run_async(go)


@click.command(cls=PilotCommand)
@pilot_options
def logout(relay: str | None, key: str | None, ca_cert: str | None) -> None:
    """Revoke the session token on the relay and forget it here.

    The session is forgotten here whatever happens: a pilot who asked to log
    out is logged out on this machine even when the relay cannot be told (it is
    away, the key cannot sign any more). The line then says so, and the exit
    code is that failure's; the token, useless without the key's signatures,
    ends at its expiry.
    """

    async def go() -> None:
        from dragoon.cockpit.cli._common import Connection, explain, open_client
        from dragoon.cockpit.cli.render import relative_time
        from dragoon.cockpit.client import RelayError
        from dragoon.cockpit.client.config import PilotConfigError, SessionStore
        from dragoon.shared.errors import AgentError, KeyLoadError

        store = SessionStore()
        try:
            session = store.load()
        except PilotConfigError:
            store.clear()
            click.echo("logged out (the session file was unreadable)", err=True)
            return
        if session is None:
            click.echo("not logged in", err=True)
            return
        if session.expired:
            store.clear()
            click.echo("logged out (the session had already expired)", err=True)
            return

        def not_told(reason: str, code: int) -> Fail:
            store.clear()
            return Fail(f"logged out here, but the relay was not told ({reason}); the token "
                        f"ends {relative_time(session.expires_at)}", code)

        try:
            client = open_client(Connection(relay, key, ca_cert))
        except (KeyLoadError, AgentError) as exc:
            raise not_told(f"key: {exc}", X.KEY) from exc
        except Fail as exc:
            if exc.code != X.AUTH:  # an unusable CA file
                raise not_told(exc.message, exc.code) from exc
            # --relay names another relay than the session's: that one is left alone.
            click.echo(f"not logged in there (the session here is with {session.relay}); "
                       "nothing done", err=True)
            return
        async with client:
            try:
                await client.logout()
            except RelayError as exc:
                if exc.code != "bad_session":
                    raise not_told(*explain(exc)) from exc
        store.clear()
        click.echo("logged out", err=True)

    run_async(go)
