"""RE-LOGIN-V1 login signing (the pilot's client) and its check (the relay).

A pilot logs in by signing the three lines ``RE-LOGIN-V1``, the relay's
challenge and the pilot's own fingerprint, as an SSHSIG in the login
namespace (PROTOCOL.md, "Login"). Both ends go through this module, so the
string, the namespace and the wire form of the signature have one home.

The challenge's freshness, its owner, the TOTP code and the lock-out are the
relay's (relay/login.py): they need its database. What is checked here needs
nothing but the pilot's registered key.
"""

from __future__ import annotations

from dragoon.shared import sshsig
from dragoon.shared.canonical import login_string
from dragoon.shared.constants import NS_LOGIN
from dragoon.shared.errors import SignatureError
from dragoon.shared.keys import PublicKey
from dragoon.shared.signers import Signer


def sign_login(signer: Signer, *, challenge: str, fingerprint: str) -> str:
    """The base64 SSHSIG over the login string, as ``POST /v1/auth/login`` carries it.

    ``fingerprint`` is the one the challenge was asked for, normally
    ``signer.fingerprint``. A challenge or fingerprint holding a line break
    would sign another string, so it is a ValueError, never signed.
    """
    return sshsig.encode_b64(signer.sign(NS_LOGIN, login_string(challenge, fingerprint)))


def verify_login(public_key: PublicKey, *, challenge: str, fingerprint: str,
                 signature: str) -> None:
    """Return if ``signature`` is ``public_key``'s login over this challenge; else SignatureError.

    The login string names the signer by fingerprint, so a ``fingerprint``
    that is not ``public_key``'s is refused even before the signature is
    read. Every failure is a SignatureError (never a ValueError), so the
    relay answers each the same way.
    """
    if fingerprint != public_key.fingerprint:
        raise SignatureError(f"login names {fingerprint}, the key is {public_key.fingerprint}")
    try:
        message = login_string(challenge, fingerprint)
    except ValueError as exc:  # a line break: no signed login can hold one
        raise SignatureError(f"login cannot be checked as sent: {exc}") from exc
    sshsig.verify(sshsig.decode_b64(signature), NS_LOGIN, message, public_key)
