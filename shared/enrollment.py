"""The one-string enrollment (join) token: relay URL, drone name, secret, relay key fingerprint.

Form: ``dragoon-join-v1.`` + unpadded base64url of the canonical JSON
``{"drone", "relay", "relay_key", "secret"}``. Carrying the fingerprint of the
relay's task-signing key lets a drone pin that key without trusting on first use.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from typing import Final

from dragoon.shared.canonical import canonical_json
from dragoon.shared.errors import TokenFormatError

PREFIX: Final = "dragoon-join-v1."
# A real token is a few hundred characters; the cap keeps a pasted novel (or a
# deeply nested JSON bomb) from reaching the JSON parser at all.
MAX_TOKEN_LENGTH: Final = 4096


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class JoinToken:
    relay: str
    drone: str
    secret: str
    relay_key: str

    def encode(self) -> str:
        payload = canonical_json(
            {"relay": self.relay, "drone": self.drone, "secret": self.secret,
             "relay_key": self.relay_key}
        )
        return PREFIX + base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str) -> JoinToken:
        text = text.strip()
        if not text.startswith(PREFIX):
            raise TokenFormatError(f"not a dragoon join token (it must start with {PREFIX!r})")
        if len(text) > MAX_TOKEN_LENGTH:
            raise TokenFormatError(f"join token is too long ({len(text)} characters)")
        body = text[len(PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            data = json.loads(raw)
        except (binascii.Error, ValueError, RecursionError) as exc:
            raise TokenFormatError("join token is damaged (bad base64 or JSON)") from exc
        fields = ("relay", "drone", "secret", "relay_key")
        if not isinstance(data, dict) or any(not isinstance(data.get(f), str) for f in fields):
            raise TokenFormatError("join token lacks one of relay, drone, secret, relay_key")
        return cls(**{f: data[f] for f in fields})
