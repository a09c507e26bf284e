"""The one-string enrollment (join) token: relay URL, drone name, secret, relay key fingerprint,
and, since version 2, the pilot keys the drone is to obey and the pilot's binding key.

Form: ``dragoon-join-v2.`` + unpadded base64url of the canonical JSON
``{"binding_key"?, "drone", "pilots", "relay", "relay_key", "secret"}``.
Carrying the fingerprint of the relay's task-signing key lets a drone pin that
key without trusting on first use. ``pilots`` (OpenSSH public key lines) seeds
the drone's ``authorized_pilots``; ``binding_key`` (32 random bytes, base64url)
is made by the pilot and never goes to the relay: the drone MACs its keys with
it, so the pilot can check them (shared/trust.py, docs/protocol.md).

``dragoon-join-v1.`` (the same JSON without ``pilots`` and ``binding_key``) is
what the relay's ``POST /v1/workers`` answers: the relay's half. The pilot's
``dragoon enroll`` makes a v2 token from it; a drone given a v1 token as it is
joins with no pilot authorized and no binding, as with an admin-minted token
without ``--authorize`` (docs/protocol.md, "Join token").
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Final

from dragoon.shared.canonical import canonical_json
from dragoon.shared.errors import TokenFormatError

PREFIX_V1: Final = "dragoon-join-v1."
PREFIX: Final = "dragoon-join-v2."
# A real token is a few hundred characters (a few thousand with several RSA keys); the cap
# keeps a pasted novel (or a deeply nested JSON bomb) from reaching the JSON parser at all.
MAX_TOKEN_LENGTH: Final = 12000
BINDING_KEY_BYTES: Final = 32


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_binding_key() -> bytes:
    return secrets.token_bytes(BINDING_KEY_BYTES)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class JoinToken:
    relay: str
    drone: str
    secret: str
    relay_key: str
    # OpenSSH public key lines (``TYPE BASE64 [COMMENT]``), no options.
    pilots: tuple[str, ...] = ()
    binding_key: bytes | None = field(default=None, repr=False)  # a secret: never in a log
    # The labels the token's maker gave (v2 only; None: a v1 token, which has none). The
    # drone takes these, never the relay's join answer's: a stolen relay can't add a label
    # that would let a pilot's labels order reach this drone.
    labels: tuple[str, ...] | None = None

    def _fields(self) -> dict[str, Any]:
        return {"relay": self.relay, "drone": self.drone, "secret": self.secret,
                "relay_key": self.relay_key}

    def encode(self) -> str:
        """The v2 token: what a drone is given."""
        fields = {**self._fields(), "pilots": list(self.pilots)}
        if self.labels is not None:
            fields["labels"] = list(self.labels)
        if self.binding_key is not None:
            fields["binding_key"] = _b64url(self.binding_key)
        return PREFIX + _b64url(canonical_json(fields))

    def relay_half(self) -> str:
        """The v1 form: the relay's fields alone, as ``POST /v1/workers`` answers them."""
        return PREFIX_V1 + _b64url(canonical_json(self._fields()))

    @classmethod
    def decode(cls, text: str) -> JoinToken:
        text = text.strip()
        prefix = next((p for p in (PREFIX, PREFIX_V1) if text.startswith(p)), None)
        if prefix is None:
            raise TokenFormatError(f"not a dragoon join token (it must start with {PREFIX!r})")
        if len(text) > MAX_TOKEN_LENGTH:
            raise TokenFormatError(f"join token is too long ({len(text)} characters)")
        body = text[len(prefix) :]
        try:
            data = json.loads(_unb64url(body))
        except (binascii.Error, ValueError, RecursionError) as exc:
            raise TokenFormatError("join token is damaged (bad base64 or JSON)") from exc
        fields = ("relay", "drone", "secret", "relay_key")
        if not isinstance(data, dict) or any(not isinstance(data.get(f), str) for f in fields):
            raise TokenFormatError("join token lacks one of relay, drone, secret, relay_key")
        base = {f: data[f] for f in fields}
        if prefix == PREFIX_V1:
            return cls(**base)
        return cls(**base, pilots=_pilots(data.get("pilots")),
                   binding_key=_binding_key(data.get("binding_key")),
                   labels=_labels(data.get("labels")))


def _pilots(value: object) -> tuple[str, ...]:
    """The token's pilot keys, each checked by the one parser of authorized_pilots lines."""
    from dragoon.shared.trust import TrustFileError, parse_pilot_line

    if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
        raise TokenFormatError("join token's pilots is not a list of key lines")
    for number, line in enumerate(value, 1):
        try:
            parse_pilot_line(line, source=f"join token, pilot key {number}")
        except TrustFileError as exc:
            raise TokenFormatError(str(exc)) from None
    return tuple(value)


def _labels(value: object) -> tuple[str, ...] | None:
    """The token's labels, each by the one label rule; absent is None (an older token)."""
    from dragoon.shared.spec import SpecError, check_labels

    if value is None:
        return None
    try:
        return tuple(check_labels(value))
    except SpecError as exc:
        raise TokenFormatError(f"join token's {exc}") from None


def _binding_key(value: object) -> bytes | None:
    if value is None:
        return None
    try:
        raw = _unb64url(value) if isinstance(value, str) and value.isascii() else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != BINDING_KEY_BYTES:
        raise TokenFormatError(f"join token's binding_key is not {BINDING_KEY_BYTES} bytes "
                               "of base64url")
    return raw
