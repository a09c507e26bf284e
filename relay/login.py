"""Pilot login per PROTOCOL.md: challenge, key signature plus TOTP, sessions, lock-out, logout.

Every function here runs on the database thread and returns a value or an
``ApiError`` (instead of raising) so that what must stick, such as a recorded
failure, commits even when the answer is an error.
"""

from __future__ import annotations

import hmac
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import pyotp
from dragoon.relay import audit
from dragoon.relay.auth import token_hash
from dragoon.relay.config import RelayConfig
from dragoon.relay.db import Connection, transaction
from dragoon.relay.errors import ApiError
from dragoon.shared.errors import SignatureError
from dragoon.shared.keys import PublicKey
from dragoon.shared.login_auth import verify_login

FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
TOTP_STEP = 30


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, pilot: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=pilot, issuer_name="dragoon")


def issue_challenge(
    conn: Connection, config: RelayConfig, fingerprint: str
) -> dict[str, Any]:
    """A single-use challenge; unknown fingerprints get one too, so keys cannot be probed."""
    if not FINGERPRINT.fullmatch(fingerprint):
        raise ApiError(422, "invalid", "fingerprint must be SHA256:<43 base64 characters>")
    challenge = secrets.token_urlsafe(32)
    expires_at = math.ceil(time.time() + config.challenge_ttl)
    with transaction(conn):
        conn.execute(
            "INSERT INTO challenges (challenge, fingerprint, expires_at) VALUES (?, ?, ?)",
            (challenge, fingerprint, expires_at),
        )
        bound_challenges(conn, config.max_challenges)
    return {"challenge": challenge, "expires_at": expires_at}


def bound_challenges(conn: Connection, cap: int) -> None:
    """Keep at most ``cap`` live challenges: the oldest give way to the newest.

    Rowids only grow, so the rows more than ``cap`` behind the newest are the
    oldest; the delete walks just those. A flood from many addresses can then
    at worst void a challenge older than ``cap`` newer ones, which a pilot who
    answers within a second or two never has.
    """
    if cap > 0:
        conn.execute(
            "DELETE FROM challenges WHERE rowid <= (SELECT max(rowid) FROM challenges) - ?",
            (cap,),
        )


@dataclass(frozen=True)
class LoginAttempt:
    fingerprint: str
    challenge: str
    signature: str
    totp: str


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The TOTP time step ``code`` belongs to, allowing one step of drift either way."""
    totp = pyotp.TOTP(secret)
    current = int(now // TOTP_STEP)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.at(step * TOTP_STEP), code):
            return step
    return None


def login(
    conn: Connection, config: RelayConfig, attempt: LoginAttempt
) -> dict[str, Any] | ApiError:
    now = time.time()
    with transaction(conn):
        return _login(conn, config, attempt, now)


def _login(
    conn: Connection, config: RelayConfig, attempt: LoginAttempt, now: float
) -> dict[str, Any] | ApiError:
    row = conn.execute(
        "DELETE FROM challenges WHERE challenge = ? RETURNING fingerprint, expires_at",
        (attempt.challenge,),
    ).fetchone()
    if row is None or row["expires_at"] < now or row["fingerprint"] != attempt.fingerprint:
        return ApiError(
            401, "bad_challenge", "the challenge is unknown, used, expired or not yours"
        )
    pilot = conn.execute(
        "SELECT * FROM pilots WHERE fingerprint = ?", (attempt.fingerprint,)
    ).fetchone()
    refused = ApiError(401, "bad_login", "unknown key or bad signature")
    if pilot is None:
        audit.record(conn, attempt.fingerprint, "login_failed", None, "unknown key", at=now)
        return refused
    try:
        verify_login(PublicKey.from_openssh(pilot["public_key"]), challenge=attempt.challenge,
                     fingerprint=attempt.fingerprint, signature=attempt.signature)
    except SignatureError:
        audit.record(conn, pilot["name"], "login_failed", pilot["name"], "bad signature", at=now)
        return refused
    name = pilot["name"]
    since = now - config.lockout_window
    failures = conn.execute(
        "SELECT COUNT(*) FROM login_failures WHERE pilot = ? AND at > ?", (name, since)
    ).fetchone()[0]
    if failures >= config.lockout_failures:
        audit.record(conn, name, "login_locked_out", name, "refused while locked out", at=now)
        return ApiError(429, "locked_out", "too many failed logins; try again later")
    step = matching_step(pilot["totp_secret"], attempt.totp.strip(), now)
    reason = None
    if step is None:
        reason = "wrong TOTP code"
    elif step <= pilot["last_totp_step"]:
        reason = "this TOTP code was already used"
    if reason is not None:
        conn.execute("INSERT INTO login_failures (pilot, at) VALUES (?, ?)", (name, now))
        audit.record(conn, name, "login_failed", name, reason, at=now)
        if failures + 1 >= config.lockout_failures:
            audit.record(
                conn, name, "lockout", name,
                f"{failures + 1} failed logins within {int(config.lockout_window)} s", at=now,
            )
        return ApiError(401, "bad_totp", reason)
    conn.execute("UPDATE pilots SET last_totp_step = ? WHERE name = ?", (step, name))
    conn.execute("DELETE FROM login_failures WHERE pilot = ?", (name,))
    token = secrets.token_urlsafe(32)
    expires_at = math.ceil(now + config.session_ttl)
    conn.execute(
        "INSERT INTO sessions (token_hash, pilot, fingerprint, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (token_hash(token), name, attempt.fingerprint, now, expires_at),
    )
    audit.record(conn, name, "login", name, attempt.fingerprint, at=now)
    return {"token": token, "expires_at": expires_at, "pilot": name}


def logout(conn: Connection, digest: str, pilot: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM sessions WHERE token_hash = ?", (digest,))
        audit.record(conn, pilot, "logout", pilot)


def add_operator(conn: Connection, name: str, key: PublicKey) -> str:
    """Register a pilot (or give an existing one a new key and TOTP secret); returns the secret."""
    secret = new_totp_secret()
    with transaction(conn):
        taken = conn.execute(
            "SELECT name FROM pilots WHERE fingerprint = ? AND name != ?", (key.fingerprint, name)
        ).fetchone()
        if taken is not None:
            raise ValueError(f"key {key.fingerprint} already belongs to pilot {taken['name']}")
        conn.execute(
            "INSERT INTO pilots (name, fingerprint, public_key, totp_secret, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
            " fingerprint = excluded.fingerprint, public_key = excluded.public_key,"
            " totp_secret = excluded.totp_secret, last_totp_step = 0",
            (name, key.fingerprint, key.openssh(), secret, time.time()),
        )
        conn.execute("DELETE FROM sessions WHERE pilot = ?", (name,))
        audit.record(conn, "admin", "add_operator", name, key.fingerprint)
    return secret
