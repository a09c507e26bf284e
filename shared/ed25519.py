"""Ed25519 signatures on libsodium (PyNaCl): the one backend for every ed25519 key in dragoon.

Why not ``cryptography``: an idle drone signs each long-poll with its ed25519 key and
checks the relay's ed25519 signatures on tasks, and nothing else it does needs a
cryptographic library. ``cryptography`` costs an idle drone about 9 MiB of RSS
(its Rust extension with OpenSSL linked in); libsodium through ``nacl.bindings``
about 2 MiB. RSA and ECDSA keys (a pilot may hold one) stay with ``cryptography``,
loaded only when such a key is met (``shared/keys.py``).

Keys are raw bytes here: the 32-byte seed (what an OpenSSH private key file stores,
followed by the public half) and the 32-byte public key. ``shared/keys.py`` stays the
one parser of the files and wire blobs that carry them.
"""

from __future__ import annotations

from typing import Final

from nacl.bindings import (
    crypto_sign,
    crypto_sign_open,
    crypto_sign_seed_keypair,
)
from nacl.exceptions import BadSignatureError
from nacl.utils import random

SEED_BYTES: Final = 32
PUBLIC_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64


class InvalidSignature(Exception):
    """The signature does not hold for this key and data (or is not 64 bytes)."""


class SigningKey:
    """An ed25519 private key held as libsodium's 64-byte secret key (seed ‖ public).

    The expanded form is kept so that each signature is one libsodium call, without
    re-deriving the public half from the seed every time.
    """

    __slots__ = ("_secret", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an ed25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
        self.public, self._secret = crypto_sign_seed_keypair(seed)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(random(SEED_BYTES))

    @property
    def seed(self) -> bytes:
        return self._secret[:SEED_BYTES]

    def sign(self, data: bytes) -> bytes:
        """The 64-byte ed25519 signature over ``data`` (RFC 8032; deterministic)."""
        return crypto_sign(data, self._secret)[:SIGNATURE_BYTES]

    def __repr__(self) -> str:  # never the secret, should a key reach a log
        return f"SigningKey(public={self.public.hex()})"


def verify(public: bytes, signature: bytes, data: bytes) -> None:
    """Raise InvalidSignature unless ``signature`` is ``public``'s ed25519 signature over ``data``.

    libsodium is strict where some implementations are lenient: it also refuses
    non-canonical signatures and small-order keys, which no honest signer produces.
    """
    if len(public) != PUBLIC_BYTES or len(signature) != SIGNATURE_BYTES:
        raise InvalidSignature("wrong length")
    try:
        crypto_sign_open(signature + data, public)
    except BadSignatureError as exc:
        raise InvalidSignature(str(exc)) from None
