"""`dragoon cockpit`: a thin click layer that builds a live data source and runs the app.

Textual is imported only inside the command body, so `dragoon --help` and
the other verbs never pay for it. An expired session does not stop the
cockpit from opening: the app asks for the TOTP code itself and stores the
new session where `dragoon login` would.
"""

from __future__ import annotations

from typing import Any

import click
from dragoon.cockpit.cli import exit_codes as X
from dragoon.cockpit.cli._common import Fail, PilotCommand, fail, pilot_options, tls_verify


def _open_source(relay: str | None, key: str | None, ca_cert: str | None) -> Any:
    from dragoon.cockpit.app.live import LiveSource
    from dragoon.cockpit.client import RelayClient
    from dragoon.cockpit.client.config import PilotConfigError, SessionStore, StoredSession, resolve
    from dragoon.cockpit.client.identity import signer_for
    from dragoon.shared.errors import AgentError, KeyLoadError

    try:
        settings = resolve(relay=relay, key=key, ca_cert=ca_cert)
        store = SessionStore()
        session = store.load()
    except PilotConfigError as exc:
        raise Fail(str(exc), X.USAGE) from exc
    url = settings.relay or (session.relay if session else None)
    if session is None or url != session.relay:
        where = f" to {url}" if url else ""
        raise Fail(f"not logged in{where}: run `dragoon login`", X.AUTH)
    key_path = settings.key or session.key
    try:
        signer = signer_for(key_path,
                            public_key=session.public_key if key_path is None else None)
    except (KeyLoadError, AgentError) as exc:
        raise Fail(f"key: {exc}", X.KEY) from exc
    client = RelayClient(url, signer=signer, token=session.token,
                         verify=tls_verify(settings.ca_cert or session.ca_cert))
    stored = session

    def keep(new: Any) -> None:
        store.save(StoredSession(
            relay=stored.relay, token=new.token, expires_at=new.expires_at,
            pilot=new.pilot or stored.pilot, fingerprint=new.fingerprint, key=stored.key,
            public_key=stored.public_key, ca_cert=stored.ca_cert))

    return LiveSource(client, pilot=session.pilot or "", on_login=keep)


@click.command("cockpit", cls=PilotCommand)
@pilot_options
@click.option("--readonly", is_flag=True,
              help="Watch only: every action that changes something is hidden.")
def cockpit(relay: str | None, key: str | None, ca_cert: str | None, readonly: bool) -> None:
    """The full-screen terminal cockpit: drones, tasks, live logs, inbox."""
    try:
        source = _open_source(relay, key, ca_cert)
    except Fail as exc:
        fail(exc.message, exc.code)
    except KeyboardInterrupt:  # at the key's passphrase prompt, as every verb ends on Ctrl-C
        fail("interrupted", X.INTERRUPTED)
    from dragoon.cockpit.app.application import CockpitApp

    CockpitApp(source, readonly=readonly).run()
