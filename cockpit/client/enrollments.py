"""The pilot's side of the trust roots: join tokens it makes, enrollments it waits on, and
``known_drones``, the drones it believes (docs/security.md, "Trust roots").

``dragoon enroll`` asks the relay for its half of a join token (the one-time
secret; v1), and makes the token the drone is given (v2) here: it adds the
pilot keys the drone is to obey and a fresh binding key that never goes to
the relay. The pending enrollment (drone name, binding key, expiry, and the
hash of the token's secret, which the relay's drone view names) is kept in
``$XDG_STATE_HOME/dragoon/pending-enrollments.json``, 0600.

Once the drone has joined, its view at the relay carries its keys and the
binding it made. ``confirm`` checks the binding (HMAC-SHA256 under the binding
key) and the drone's certificate of its X25519 key; only then is the drone
written to ``known_drones`` (beside the config file, 0600). A relay that
swapped a key can't make the MAC: the pilot refuses, loudly, and writes nothing.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dragoon.cockpit.client.config import PilotConfigError, config_path, state_dir
from dragoon.shared.enrollment import JoinToken, new_binding_key
from dragoon.shared.errors import DragoonError
from dragoon.shared.keys import ED25519, PublicKey, write_private_file
from dragoon.shared.spec import check_labels
from dragoon.shared.trust import (
    KnownDrone,
    TrustFileError,
    binding_holds,
    check_x25519_certificate,
    parse_pilot_line,
    parse_x25519,
    read_known_drones,
    write_known_drones,
    x25519_fingerprint,
)

# A pending enrollment whose token expired is kept this long after for a drone that joined
# just before the expiry and that no listing has met yet; then it is dropped.
PENDING_AFTER_EXPIRY = 7 * 86400.0
PENDING_FILE = "pending-enrollments.json"  # in the state dir; cli/drones.py looks for it first


class TrustMismatch(Exception):
    """The relay reports keys for a drone that this pilot's binding (or fingerprint) refutes.

    The text is the one line the pilot sees: the drone and both fingerprints.
    """


def known_drones_path(env: Mapping[str, str] = os.environ) -> Path:
    """``known_drones`` beside the config file: ``~/.config/dragoon/known_drones``."""
    return config_path(env).parent / "known_drones"


def secret_digest(secret: str) -> str:
    """How the relay's drone view names the token a drone spent: the SHA-256 of its secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PendingEnrollment:
    relay: str
    name: str
    binding_key: str  # base64 of the 32 bytes
    expires_at: float
    enrollment: str  # secret_digest of the token's secret

    @property
    def key(self) -> bytes:
        return base64.b64decode(self.binding_key)


class PendingStore:
    """``pending-enrollments.json``: one entry per (relay, drone name), 0600, written whole."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self.path = state_dir(env) / PENDING_FILE

    def load(self) -> list[PendingEnrollment]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = [PendingEnrollment(**entry) for entry in data["pending"]]
            for entry in entries:
                if len(entry.key) != 32:
                    raise ValueError("a binding key is not 32 bytes")
            return entries
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, KeyError, binascii.Error) as exc:
            raise PilotConfigError(f"pending enrollments file {self.path} is unreadable "
                                   f"({exc}); remove it and enroll again") from exc

    def save(self, entries: Iterable[PendingEnrollment]) -> None:
        """Written whole; with nothing pending the file goes (a listing then skips the check)."""
        entries = list(entries)
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = {"pending": [dataclasses.asdict(e) for e in entries]}
        write_private_file(self.path, json.dumps(body, indent=1).encode())

    def add(self, entry: PendingEnrollment) -> None:
        kept = [e for e in self.load() if (e.relay, e.name) != (entry.relay, entry.name)]
        self.save([*kept, entry])

    def drop(self, relay: str, name: str) -> None:
        entries = self.load()
        kept = [e for e in entries if (e.relay, e.name) != (relay, name)]
        if len(kept) != len(entries):
            self.save(kept)


def pilot_token(relay_half: str, relay: str, pilots: Iterable[str], *,
                expires_at: float, labels: Iterable[str] | None = ()
                ) -> tuple[str, PendingEnrollment]:
    """The v2 token for the drone, from the relay's answer, and its pending enrollment.

    Only the relay's four fields are taken from its answer: pilot keys, labels or a
    binding key a relay put there are dropped, never passed on; ``labels`` are the pilot's
    own, the ones the drone will take.
    """
    try:
        half = JoinToken.decode(relay_half)
    except DragoonError as exc:
        raise TrustMismatch(f"the relay's join token is unusable: {exc}") from None
    keys: list[str] = []
    for line in pilots:
        key = parse_pilot_line(line, source="pilot key").openssh()
        if key not in keys:
            keys.append(key)
    binding_key = new_binding_key()
    token = JoinToken(relay=half.relay, drone=half.drone, secret=half.secret,
                      relay_key=half.relay_key, pilots=tuple(keys), binding_key=binding_key,
                      labels=tuple(check_labels(list(labels or ()))))
    pending = PendingEnrollment(relay=relay, name=half.drone,
                                binding_key=base64.b64encode(binding_key).decode("ascii"),
                                expires_at=float(expires_at), enrollment=secret_digest(half.secret))
    return token.encode(), pending


def _reported_keys(drone: Mapping[str, Any]) -> tuple[PublicKey, bytes | None, str | None]:
    """The drone's ed25519 key and X25519 key as the relay reports them (X25519 may lack)."""
    name = str(drone.get("name"))
    try:
        key = PublicKey.from_openssh(str(drone.get("public_key") or ""),
                                     source=f"drone {name}'s key")
    except DragoonError as exc:
        raise TrustMismatch(f"drone {name}: the relay reports no usable key ({exc})") from None
    if key.key_type != ED25519:
        raise TrustMismatch(f"drone {name}: the relay reports a {key.key_type} key")
    x_text = drone.get("x25519_public_key")
    try:
        x25519 = parse_x25519(x_text) if isinstance(x_text, str) else None
    except TrustFileError:
        x25519 = None
    signature = drone.get("x25519_signature")
    return key, x25519, signature if isinstance(signature, str) else None


def _refuse(name: str, key: PublicKey, x25519: bytes | None, why: str) -> TrustMismatch:
    shown = x25519_fingerprint(x25519) if x25519 is not None else "none"
    return TrustMismatch(
        f"drone {name}: REFUSED, {why}: the relay reports ed25519 {key.fingerprint}, x25519 "
        f"{shown}; not added to known_drones (the relay, or someone between it and the drone, "
        "may have swapped them)")


def check_binding(pending: PendingEnrollment, drone: Mapping[str, Any]) -> KnownDrone:
    """The drone, once its binding and certificate hold; TrustMismatch otherwise."""
    name = pending.name
    key, x25519, signature = _reported_keys(drone)
    binding = drone.get("binding")
    if x25519 is None or signature is None or not isinstance(binding, str):
        raise _refuse(name, key, x25519, "it sent no enrollment binding")
    if not binding_holds(pending.key, name, key, x25519, binding):
        raise _refuse(name, key, x25519, "its keys do not match the enrollment binding "
                                         "this pilot made")
    return _certified(name, key, x25519, signature)


def _certified(name: str, key: PublicKey, x25519: bytes, signature: str) -> KnownDrone:
    """The drone, once its key is shown to certify the X25519 key reported beside it."""
    try:
        check_x25519_certificate(key, x25519, signature)
    except DragoonError:
        raise _refuse(name, key, x25519, "its X25519 key is not certified by its key") from None
    return KnownDrone(name, key, x25519)


def check_fingerprint(name: str, fingerprint: str, drone: Mapping[str, Any]) -> KnownDrone:
    """``dragoon drones trust``: the reported key must have ``fingerprint`` and certify the
    reported X25519 key; TrustMismatch otherwise."""
    key, x25519, signature = _reported_keys(drone)
    if key.fingerprint != fingerprint:
        raise _refuse(name, key, x25519, f"its key is not {fingerprint}")
    if x25519 is None or signature is None:
        raise _refuse(name, key, x25519, "it has no X25519 key (a drone joined before "
                                         "trust roots; join it again)")
    return _certified(name, key, x25519, signature)


def remember(drone: KnownDrone, env: Mapping[str, str] = os.environ) -> None:
    """Write ``drone`` into known_drones, replacing an entry of the same name."""
    path = known_drones_path(env)
    try:
        known = read_known_drones(path)
    except TrustFileError as exc:
        raise PilotConfigError(f"{exc}; fix or remove the line") from None
    known[drone.name] = drone
    write_known_drones(path, known.values())


def confirm(relay: str, drones: Iterable[Mapping[str, Any]], *,
            env: Mapping[str, str] = os.environ,
            now: float | None = None) -> tuple[list[KnownDrone], list[TrustMismatch]]:
    """Check every pending enrollment with ``relay`` that ``drones`` (the relay's listing)
    answers; write the confirmed ones to known_drones and drop them from pending.

    Returns the confirmed drones and the refusals. A drone whose view names another
    enrollment (a drone it replaces, or none yet) is still pending. A refused entry
    stays pending, so every listing says so until the pilot enrolls the name again
    (or trusts it by fingerprint).
    """
    store = PendingStore(env)
    pending = [p for p in store.load() if p.relay == relay]
    now = time.time() if now is None else now
    by_name = {str(d.get("name")): d for d in drones}
    confirmed: list[KnownDrone] = []
    refused: list[TrustMismatch] = []
    for entry in pending:
        view = by_name.get(entry.name)
        if view is None or view.get("enrollment") != entry.enrollment:
            if now > entry.expires_at + PENDING_AFTER_EXPIRY:
                store.drop(relay, entry.name)
            continue
        try:
            drone = check_binding(entry, view)
        except TrustMismatch as exc:
            refused.append(exc)
            continue
        remember(drone, env)
        store.drop(relay, entry.name)
        confirmed.append(drone)
    return confirmed, refused
