"""Enrollment: one-time, expiring join tokens (stored hashed) and drone registration."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from typing import Any

from dragoon.relay import audit, fetches
from dragoon.relay.db import Connection, Row, transaction
from dragoon.relay.errors import ApiError
from dragoon.shared.enrollment import JoinToken, new_secret
from dragoon.shared.errors import KeyLoadError
from dragoon.shared.keys import ED25519, PublicKey
from dragoon.shared.spec import SpecError, check_drone_name
from dragoon.shared.spec import check_labels as shared_check_labels
from dragoon.shared.trust import TrustFileError, parse_x25519


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
    conn: Connection, *, relay_url: str, relay_key: str, drone: str, labels: list[str],
    ttl: float, by: str, replace: bool = False,
) -> tuple[str, int]:
    """A join token for ``drone``; only the secret's hash is kept.

    A name a drone holds is refused (409 ``name_taken``) unless ``replace``:
    the token then may replace that drone when it is used (docs/security.md).
    """
    check_name(drone)
    labels = check_labels(labels)
    secret = new_secret()
    now = time.time()
    expires_at = math.ceil(now + ttl)  # whole seconds, never before the ttl ran out
    with transaction(conn):
        holder = conn.execute("SELECT state FROM drones WHERE name = ?", (drone,)).fetchone()
        if holder is not None and not replace:
            raise name_taken(drone, holder["state"], "use --replace")
        conn.execute(
            "INSERT INTO enrollments (secret_hash, drone, labels, created_by, created_at,"
            " expires_at, may_replace) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_hash(secret), drone, json.dumps(labels), by, now, expires_at, int(replace)),
        )
        detail = f"expires {expires_at}" + ("; may replace" if replace else "")
        audit.record(conn, by, "enroll_token", drone, detail, at=now)
    token = JoinToken(relay=relay_url, drone=drone, secret=secret, relay_key=relay_key)
    # The relay's half (v1): the pilot adds its keys and binding (docs/protocol.md, "Join token").
    return token.relay_half(), expires_at


def register(
    conn: Connection, body: dict[str, Any], relay_public_key: str
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
    trust = _trust_fields(body)
    if isinstance(trust, ApiError):
        return trust
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
        holder = conn.execute("SELECT * FROM drones WHERE name = ?", (name,)).fetchone()
        lost: list[str] = []
        failed_fetches: list[str] = []
        if holder is not None:
            if not row["may_replace"]:
                # The name was taken after this token was minted: it must not replace anyone.
                return name_taken(name, holder["state"], "this join token was minted without "
                                  "--replace; mint a new one with --replace to replace it")
            lost, failed_fetches = _retire(conn, holder, key.fingerprint, row["created_by"], now)
        # A key that comes back (re-enrolled after it was retired) is live again.
        conn.execute("DELETE FROM retired_keys WHERE fingerprint = ?", (key.fingerprint,))
        asked = set(check_labels(body.get("labels") or []))
        labels = sorted(set(json.loads(row["labels"])) | asked)
        conn.execute(
            "INSERT INTO drones (name, fingerprint, public_key, labels, slots, hostname, version,"
            " state, enrolled_at, x25519_public_key, x25519_signature, binding, enrolled_with)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint,"
            " public_key = excluded.public_key, labels = excluded.labels, slots = excluded.slots,"
            " hostname = excluded.hostname, version = excluded.version, state = 'pending',"
            " enrolled_at = excluded.enrolled_at,"
            " x25519_public_key = excluded.x25519_public_key,"
            " x25519_signature = excluded.x25519_signature, binding = excluded.binding,"
            " enrolled_with = excluded.enrolled_with",
            (name, key.fingerprint, key.openssh(), json.dumps(labels), body.get("slots") or 1,
             body.get("hostname"), body.get("version"), now, *trust, digest),
        )
        audit.record(conn, name, "enroll", name, key.fingerprint, at=now)
    # The last three are for the route's events and log; they are not in the answer.
    return {"name": name, "relay_public_key": relay_public_key,
            "labels": labels,  # the drone keeps them: a labels order is checked against them
            "replaced": holder is not None, "lost": lost, "failed_fetches": failed_fetches}


def _trust_fields(body: dict[str, Any]) -> tuple[str | None, str | None, str | None] | ApiError:
    """The X25519 key, its certificate and the binding, as the drone sent them.

    Only their form is checked here (the relay is not who they protect): the
    pilots check the certificate and the binding themselves (docs/security.md).
    """
    x25519, signature, binding = (body.get("x25519_public_key"), body.get("x25519_signature"),
                                  body.get("binding"))
    try:
        if x25519 is not None:
            parse_x25519(x25519, source="x25519_public_key")
        if binding is not None and len(base64.b64decode(binding, validate=True)) != 32:
            raise TrustFileError("binding: not 32 bytes")
        if signature is not None:
            base64.b64decode(signature, validate=True)
    except (TrustFileError, binascii.Error, ValueError) as exc:
        return ApiError(422, "invalid", str(exc) if isinstance(exc, TrustFileError)
                        else "x25519_signature or binding is not base64")
    if (x25519 is None) != (signature is None) or (binding is not None and x25519 is None):
        return ApiError(422, "invalid", "x25519_public_key and x25519_signature come together, "
                                        "and a binding needs them")
    return x25519, signature, binding


def name_taken(name: str, state: str, hint: str) -> ApiError:
    return ApiError(409, "name_taken", f"drone {name} exists ({state}); {hint}",
                    drone=name, state=state)


def _retire(
    conn: Connection, holder: Row, new_fingerprint: str, by: str, now: float
) -> tuple[list[str], list[str]]:
    """Replace ``holder``: retire its key, end its handed-out tasks as ``lost``, fail its fetches.

    Runs in the transaction that records the new key, so there is no moment
    at which the successor could be handed the old drone's dispatched tasks
    (or serve a file the pilot asked of the old box). Returns the ids of the
    lost tasks and of the failed fetches.
    """
    # Imported here: relay/tasks.py imports this module (for check_labels).
    from dragoon.relay.tasks import lose_drone_tasks

    name = holder["name"]
    if holder["fingerprint"] != new_fingerprint:
        conn.execute(
            "INSERT INTO retired_keys (fingerprint, drone, public_key, retired_at,"
            " replaced_by) VALUES (?, ?, ?, ?, ?) ON CONFLICT (fingerprint) DO UPDATE SET"
            " drone = excluded.drone, public_key = excluded.public_key,"
            " retired_at = excluded.retired_at, replaced_by = excluded.replaced_by",
            (holder["fingerprint"], name, holder["public_key"], now, new_fingerprint),
        )
    lost = lose_drone_tasks(
        conn, name, f"lost: drone replaced by a newer enrollment of {name}; not run again", now)
    pending = [r["id"] for r in conn.execute(
        "SELECT id FROM fetches WHERE drone = ? AND state = 'pending'", (name,))]
    failed = [f for f in pending if fetches.fail(conn, name, f, "the drone was replaced")]
    audit.record(conn, by, "replace", name,
                 f"{holder['fingerprint']} -> {new_fingerprint}; {len(lost)} task(s) lost", at=now)
    return lost, failed
