"""``dragoon drone join``: make the drone's keys, enroll at the relay, pin the relay's task key.

The drone makes its signing key (ed25519) and its encryption key (X25519), seeds
``authorized_pilots`` with the pilot keys the token carries, and sends the
X25519 key's public half with its signing key's certificate of it and, when
the token came from a pilot, the binding: an HMAC under the pilot's binding
key over both public keys, which the relay can't make (docs/security.md,
"Trust roots").

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
from typing import Any

import httpx
from dragoon.drone import config
from dragoon.drone.client import EXIT_TLS
from dragoon.drone.daemon import version
from dragoon.drone.state import DataDir, write_atomic
from dragoon.shared.enrollment import JoinToken
from dragoon.shared.errors import DragoonError, KeyLoadError, TokenFormatError
from dragoon.shared.keys import PrivateKey, PublicKey, load_private_key_file
from dragoon.shared.tls import CaCertError, ca_context, is_tls_failure
from dragoon.shared.trust import (
    TrustFileError,
    X25519Key,
    certify_x25519,
    make_binding,
    parse_pilot_line,
    read_authorized_pilots,
    write_authorized_pilots,
    x25519_fingerprint,
    x25519_text,
)


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
    x25519_fingerprint: str = ""
    pilots: int = 0  # how many keys authorized_pilots holds from the token
    bound: bool = False  # the token carried a pilot's binding key


def _joined_labels(given: list[str], enrolled: object) -> list[str]:
    """The drone's labels: its own ``--labels`` and those its enrollment gave, each by the
    label rule (anything else is ignored). A pilot's labels order is checked against these
    (drone/orders.py). The enrollment's are the v2 token's, made on the pilot's side (or by
    the relay admin's `relay enroll`), never the relay's join answer's; only a v1 token,
    which has none, falls back to the answer's."""
    from dragoon.shared.spec import SpecError, check_label

    labels = list(given)
    for label in enrolled if isinstance(enrolled, list) else []:
        try:
            label = check_label(label)
        except SpecError:
            continue
        if label not in labels:
            labels.append(label)
    return labels


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
    new_x25519 = not data.x25519_key.exists()
    try:
        x25519 = X25519Key.generate() if new_x25519 else X25519Key.load(data.x25519_key)
        pilots = [parse_pilot_line(line, source="join token") for line in token.pilots]
    except TrustFileError as exc:
        raise JoinError(str(exc)) from exc
    body: dict[str, Any] = {
        "name": token.drone, "secret": token.secret, "public_key": key.public_key.openssh(),
        "labels": labels or [], "slots": slots, "hostname": socket.gethostname(),
        "version": version(),
        # Trust roots (docs/protocol.md, "Join token"): only the X25519 key's public half
        # leaves the box, certified by the drone's key; the binding only if a pilot made one.
        "x25519_public_key": x25519_text(x25519.public),
        "x25519_signature": certify_x25519(key, x25519.public),
    }
    if token.binding_key is not None:
        body["binding"] = make_binding(token.binding_key, token.drone, key.public_key,
                                       x25519.public)
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
        name=name, relay=token.relay.rstrip("/"), slots=slots,
        labels=_joined_labels(labels or [], answer.get("labels") if token.labels is None
                              else list(token.labels)),
        ca_cert=data.ca_cert.name if ca_pem is not None else "")
    _write(data, key if new_key else None, x25519 if new_x25519 else None, pilots, relay_key,
           settings, ca_pem)
    return Joined(name, settings.relay, key.public_key.fingerprint, relay_key.fingerprint,
                  x25519_fingerprint(x25519.public), len(pilots), token.binding_key is not None)


def _write(data: DataDir, key: PrivateKey | None, x25519: X25519Key | None,
           pilots: list[PublicKey], relay_key: PublicKey, settings: config.DroneSettings,
           ca_pem: bytes | None) -> None:
    """The data dir's files, all or nothing: a write that fails (a full disk, a read-only
    folder) takes back what this join made, so the join can simply be run again."""
    top = next((p for p in reversed([data.root, *data.root.parents]) if not p.exists()), None)
    made = [path for path in (data.key, data.key.with_name(data.key.name + ".pub"),
                              data.x25519_key, data.authorized_pilots,
                              data.relay_key, data.ca_cert, data.settings, data.tasks,
                              data.work)
            if not path.exists()]
    try:
        data.create()
        if key is not None:
            key.save(data.key)
        if x25519 is not None:
            x25519.save(data.x25519_key)
        # The token's keys, and any the box's owner put there before: the box's grant.
        kept = read_authorized_pilots(data.authorized_pilots)
        write_authorized_pilots(data.authorized_pilots,
                                [*kept, *(k for k in pilots if k not in kept)])
        write_atomic(data.relay_key, (relay_key.openssh() + "\n").encode("ascii"), mode=0o644)
        if ca_pem is not None:
            # Public certificates, readable like relay_key.pub; kept as given (a bundle whole).
            write_atomic(data.ca_cert, ca_pem, mode=0o644)
        config.save(settings, data.settings)
    except (OSError, TrustFileError) as exc:
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        else:
            for path in made:
                with contextlib.suppress(OSError):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise JoinError(f"cannot write the drone's files in {data.root}: {reason}") from exc
