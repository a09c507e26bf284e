"""Enrollment: one-time, expiring join tokens (stored hashed) and drone registration."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import sqlite3
import time
from typing import Any

from dragoon.relay import audit
from dragoon.relay.db import transaction
from dragoon.relay.errors import ApiError
from dragoon.shared.enrollment import JoinToken, new_secret
from dragoon.shared.errors import KeyLoadError
from dragoon.shared.keys import ED25519, PublicKey
from dragoon.shared.spec import SpecError, check_drone_name
from dragoon.shared.spec import check_labels as shared_check_labels


def check_name(name: str) -> str:
    """A drone name by the one rule of shared/spec.py; its reason is the 422's detail."""
    try:
        return check_drone_name(name)
    except SpecError as exc:
        raise ApiError(422, "invalid", str(exc)) from None


def check_labels(labels: list[str]) -> list[str]:
    """Labels by the one rule of shared/spec.py, stored sorted and without duplicates."""
    try:
        return sorted(shared_check_labels(labels))
    except SpecError as exc:
        raise ApiError(422, "invalid", str(exc)) from None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def mint(
    conn: sqlite3.Connection, *, relay_url: str, relay_key: str, drone: str, labels: list[str],
    ttl: float, by: str,
) -> tuple[str, int]:
    """A join token for ``drone``; only the secret's hash is kept."""
    check_name(drone)
    labels = check_labels(labels)
    secret = new_secret()
    now = time.time()
    expires_at = math.ceil(now + ttl)  # whole seconds, never before the ttl ran out
    with transaction(conn):
        conn.execute(
            "INSERT INTO enrollments (secret_hash, drone, labels, created_by, created_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            (_hash(secret), drone, json.dumps(labels), by, now, expires_at),
        )
        audit.record(conn, by, "enroll_token", drone, f"expires {expires_at}", at=now)
    token = JoinToken(relay=relay_url, drone=drone, secret=secret, relay_key=relay_key)
    return token.encode(), expires_at


def register(
    conn: sqlite3.Connection, body: dict[str, Any], relay_public_key: str
) -> dict[str, Any] | ApiError:
    """``POST /v1/worker/init``: spend the token, record the drone's key."""
    now = time.time()
    digest = _hash(body["secret"])
    try:
        key = PublicKey.from_openssh(body["public_key"], source="public_key")
    except KeyLoadError as exc:
        return ApiError(422, "invalid", exc.detail)
    if key.key_type != ED25519:
        return ApiError(422, "invalid", "a drone key must be ssh-ed25519")
    with transaction(conn):
        row = conn.execute(
            "SELECT * FROM enrollments WHERE secret_hash = ?", (digest,)
        ).fetchone()
        if (row is None or not hmac.compare_digest(row["secret_hash"], digest)
                or row["drone"] != body["name"]):
            return ApiError(
                401, "bad_enrollment_token", "the join token is unknown or already used"
            )
        conn.execute("DELETE FROM enrollments WHERE secret_hash = ?", (digest,))
        if row["expires_at"] <= now:
            return ApiError(401, "bad_enrollment_token", "the join token has expired")
        name = row["drone"]
        other = conn.execute(
            "SELECT name FROM drones WHERE fingerprint = ? AND name != ?", (key.fingerprint, name)
        ).fetchone()
        if other is not None:
            return ApiError(409, "conflict", f"this key is already drone {other['name']}")
        asked = set(check_labels(body.get("labels") or []))
        labels = sorted(set(json.loads(row["labels"])) | asked)
        conn.execute(
            "INSERT INTO drones (name, fingerprint, public_key, labels, slots, hostname, version,"
            " state, enrolled_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)"
            " ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint,"
            " public_key = excluded.public_key, labels = excluded.labels, slots = excluded.slots,"
            " hostname = excluded.hostname, version = excluded.version, state = 'pending',"
            " enrolled_at = excluded.enrolled_at",
            (name, key.fingerprint, key.openssh(), json.dumps(labels), body.get("slots") or 1,
             body.get("hostname"), body.get("version"), now),
        )
        audit.record(conn, name, "enroll", name, key.fingerprint, at=now)
    return {"name": name, "relay_public_key": relay_public_key}
