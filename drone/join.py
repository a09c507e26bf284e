"""``dragoon drone join``: make the drone's key, enroll at the relay, pin the relay's task key.

The join token carries the fingerprint of the relay's task-signing key, so the
key the relay sends back is kept only when it matches: the drone never trusts
a key on first use. Nothing is written to the data dir until the relay has
accepted the drone and its key checked out, so a failed join (a bad token, the
relay down or refusing, a TLS failure, a name taken) leaves no trace: a data dir
that did not exist before does not exist after, and one that did is unchanged.

``--ca-cert FILE`` (a relay behind a private CA) is checked before anything is
sent, trusted alone for the enrollment, and copied into the data dir
(``relay-ca.pem``, named by drone.toml's ``ca_cert``) once the join succeeded:
the drone then trusts it at every start without the flag, and without depending
on a file outside its data dir that may move, vanish, or be unreadable to the
user the drone runs as.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
from dragoon.drone import config
from dragoon.drone.client import EXIT_TLS
from dragoon.drone.daemon import version
from dragoon.drone.state import DataDir, write_atomic
from dragoon.shared.enrollment import JoinToken
from dragoon.shared.errors import DragoonError, KeyLoadError, TokenFormatError
from dragoon.shared.keys import PrivateKey, PublicKey, load_private_key_file
from dragoon.shared.tls import CaCertError, ca_context, is_tls_failure


class JoinError(Exception):
    """Joining failed; the text is the one line the user sees, ``status`` the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Joined:
    name: str
    relay: str
    fingerprint: str
    relay_key_fingerprint: str


def join(token_text: str, data_dir: Path, *, slots: int = 1, labels: list[str] | None = None,
         ca_cert: Path | None = None, http: httpx.Client | None = None) -> Joined:
    try:
        token = JoinToken.decode(token_text)
    except TokenFormatError as exc:
        raise JoinError(str(exc)) from exc
    try:
        verify = ca_context(ca_cert) if ca_cert is not None else True
        ca_pem = ca_cert.read_bytes() if ca_cert is not None else None
    except CaCertError as exc:
        raise JoinError(str(exc), EXIT_TLS) from exc
    except OSError as exc:
        raise JoinError(f"cannot read CA certificate {ca_cert}: {exc.strerror}", EXIT_TLS) from exc
    data = DataDir(data_dir)
    if data.settings.exists():
        raise JoinError(f"{data.settings} exists: this data dir already belongs to a drone "
                        "(use a fresh --data DIR)")
    # A key an older version left in the data dir is reused (read, never changed); a new one
    # stays in memory until the relay has said yes.
    new_key = not data.key.exists()
    if new_key:
        key = PrivateKey.generate_ed25519(comment=f"dragoon-drone-{token.drone}")
    else:
        try:
            key = load_private_key_file(data.key)
        except KeyLoadError as exc:
            raise JoinError(str(exc)) from exc
    body = {
        "name": token.drone, "secret": token.secret, "public_key": key.public_key.openssh(),
        "labels": labels or [], "slots": slots, "hostname": socket.gethostname(),
        "version": version(),
    }
    url = token.relay.rstrip("/") + "/v1/worker/init"
    client = http or httpx.Client(timeout=30.0, verify=verify)
    try:
        response = client.post(url, json=body)
    except httpx.HTTPError as exc:
        if is_tls_failure(exc):
            hint = (f"does the relay's certificate chain to {ca_cert}?" if ca_cert is not None
                    else "if a private CA signed the relay's certificate, pass it with "
                         "--ca-cert FILE")
            raise JoinError(f"TLS failure talking to {token.relay}: {exc}; {hint}",
                            EXIT_TLS) from exc
        raise JoinError(f"cannot reach the relay at {token.relay}: {exc}") from exc
    finally:
        if http is None:
            client.close()
    if response.status_code != 200:
        try:
            err = response.json()
            reason = f"{err.get('error')}: {err.get('detail')}"
        except (ValueError, AttributeError):
            reason = response.text[:200]
        raise JoinError(f"the relay refused to enroll {token.drone!r} (HTTP "
                        f"{response.status_code} {reason})")
    try:
        answer = response.json()
        relay_key = PublicKey.from_openssh(answer["relay_public_key"], source="relay task key")
    except (ValueError, KeyError, TypeError, DragoonError) as exc:
        raise JoinError(f"the relay's answer holds no usable task key ({exc})") from exc
    if relay_key.fingerprint != token.relay_key:
        raise JoinError(
            f"refusing the relay's task key: its fingerprint {relay_key.fingerprint} is not "
            f"{token.relay_key} from the join token (wrong relay, or someone in between)")
    name = answer.get("name") if isinstance(answer.get("name"), str) else token.drone
    settings = config.DroneSettings(
        name=name, relay=token.relay.rstrip("/"), slots=slots, labels=labels or [],
        ca_cert=data.ca_cert.name if ca_pem is not None else "")
    _write(data, key if new_key else None, relay_key, settings, ca_pem)
    return Joined(name, settings.relay, key.public_key.fingerprint, relay_key.fingerprint)


def _write(data: DataDir, key: PrivateKey | None, relay_key: PublicKey,
           settings: config.DroneSettings, ca_pem: bytes | None) -> None:
    """The data dir's files, all or nothing: a write that fails (a full disk, a read-only
    folder) takes back what this join made, so the join can simply be run again."""
    top = next((p for p in reversed([data.root, *data.root.parents]) if not p.exists()), None)
    made = [path for path in (data.key, data.key.with_name(data.key.name + ".pub"),
                              data.relay_key, data.ca_cert, data.settings, data.tasks,
                              data.work)
            if not path.exists()]
    try:
        data.create()
        if key is not None:
            key.save(data.key)
        write_atomic(data.relay_key, (relay_key.openssh() + "\n").encode("ascii"), mode=0o644)
        if ca_pem is not None:
            # Public certificates, readable like relay_key.pub; kept as given (a bundle whole).
            write_atomic(data.ca_cert, ca_pem, mode=0o644)
        config.save(settings, data.settings)
    except OSError as exc:
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        else:
            for path in made:
                with contextlib.suppress(OSError):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise JoinError(f"cannot write the drone's files in {data.root}: "
                        f"{exc.strerror or exc}") from exc
