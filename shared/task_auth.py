"""RE-TASK-V1 task signing (the relay) and verification (the drone).

The relay hands each task to a drone as a signed envelope, a JSON object:

    {"id", "drone", "seq", "spec", "signature"[, "spec_sha256"]}

``signature`` is the base64 SSHSIG (namespace ``dragoon-task-v1``) over the
canonical task; ``spec_sha256``, when present, is the hash the relay signed,
sent beside the spec so that a spec altered in transit is named as such
(docs/protocol.md). Both ends go through this module, so the envelope and the
signed lines have one definition.

``verify_task`` makes the checks that need nothing but the pinned relay key
and the drone's own name: signature, drone name, spec hash. The drone's own
policy (a sequence number above the last one it accepted, kept across
restarts) stays in drone/.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dragoon.shared import sshsig
from dragoon.shared.canonical import canonical_task, canonical_task_from_hash, spec_sha256
from dragoon.shared.constants import NS_TASK
from dragoon.shared.errors import DragoonError, SignatureError
from dragoon.shared.keys import PublicKey
from dragoon.shared.signers import Signer

ERR_BAD_TASK: Final = "bad_task_signature"


class TaskRejected(DragoonError):
    """A task the drone must not run; ``detail`` is the reason it reports."""

    code = ERR_BAD_TASK


@dataclass(frozen=True)
class SignedTask:
    """A task as the relay hands it, fields checked for type (not yet for trust)."""

    id: str
    drone: str
    seq: int
    spec: dict[str, Any]
    signature: str
    spec_sha256: str | None  # present when the relay sends it; else computed


@dataclass(frozen=True)
class VerifiedTask:
    """A task whose signature, drone name and spec hash have been checked."""

    id: str
    drone: str
    seq: int
    spec: dict[str, Any]
    spec_sha256: str


def sign_task(
    signer: Signer, *, task_id: str, drone: str, seq: int,
    spec: dict[str, Any] | None = None, spec_hash: str | None = None,
) -> str:
    """The base64 SSHSIG over the canonical task: give the spec, or its hash held ahead."""
    if (spec is None) == (spec_hash is None):
        raise ValueError("sign_task needs exactly one of spec and spec_hash")
    if spec_hash is not None:
        message = canonical_task_from_hash(task_id=task_id, drone=drone, seq=seq,
                                           spec_hash=spec_hash)
    else:
        message = canonical_task(task_id=task_id, drone=drone, seq=seq, spec=spec)
    return sshsig.encode_b64(signer.sign(NS_TASK, message))


def task_envelope(
    signer: Signer, *, task_id: str, drone: str, seq: int, spec: dict[str, Any],
    spec_hash: str | None = None, send_hash: bool = False,
) -> dict[str, Any]:
    """The signed envelope the relay hands a drone.

    ``spec_hash`` is the spec's hash when the caller already holds it (it is
    signed as given, so it must be the hash of ``spec``); ``send_hash`` puts it
    in the envelope beside the spec.
    """
    digest = spec_sha256(spec) if spec_hash is None else spec_hash
    envelope: dict[str, Any] = {
        "id": task_id, "drone": drone, "seq": seq, "spec": spec,
        "signature": sign_task(signer, task_id=task_id, drone=drone, seq=seq, spec_hash=digest),
    }
    if send_hash:
        envelope["spec_sha256"] = digest
    return envelope


def parse_signed_task(raw: object) -> SignedTask:
    """The envelope's fields, type-checked; TaskRejected says why it cannot even be read."""
    if not isinstance(raw, Mapping):
        raise TaskRejected("task is not a JSON object")
    task_id, drone, seq = raw.get("id"), raw.get("drone"), raw.get("seq")
    spec, signature = raw.get("spec"), raw.get("signature")
    if not isinstance(task_id, str) or not task_id:
        raise TaskRejected("task has no id")
    if not isinstance(drone, str):
        raise TaskRejected("task has no drone name")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise TaskRejected("task has no valid sequence number")
    if not isinstance(spec, dict):
        raise TaskRejected("task has no spec object")
    if not isinstance(signature, str) or not signature:
        raise TaskRejected("task is not signed")
    claimed = raw.get("spec_sha256")
    if claimed is not None and not isinstance(claimed, str):
        raise TaskRejected("task's spec_sha256 is not a string")
    return SignedTask(task_id, drone, seq, spec, signature, claimed)


def verify_task(relay_key: PublicKey, task: SignedTask | object, *,
                drone_name: str) -> VerifiedTask:
    """The checked task, or TaskRejected with the reason, checked in this order.

    Signature first (against the pinned relay key only), then the drone name,
    then the spec's hash. When the relay sends the signed hash beside the
    spec, a spec altered in transit is named as such; without it, an altered
    spec breaks the signature, which says so. ``task`` is a ``SignedTask`` or
    the raw envelope.
    """
    signed = task if isinstance(task, SignedTask) else parse_signed_task(task)
    actual: str | None = None  # the spec's own hash, once computed
    if signed.spec_sha256 is None:
        actual = signed_hash = _spec_hash(signed.spec)
    else:
        signed_hash = signed.spec_sha256
    try:
        message = canonical_task_from_hash(task_id=signed.id, drone=signed.drone,
                                           seq=signed.seq, spec_hash=signed_hash)
    except ValueError as exc:  # a line break in a field, a claimed hash that is no hash
        raise TaskRejected(f"task cannot be checked as sent: {exc}") from exc
    try:
        sshsig.verify(sshsig.decode_b64(signed.signature), NS_TASK, message, relay_key)
    except SignatureError as exc:
        raise TaskRejected(
            f"signature does not verify against the pinned relay key ({exc})"
        ) from exc
    if signed.drone != drone_name:
        raise TaskRejected(f"task is for drone {signed.drone!r}, not {drone_name!r}")
    if actual is None:
        actual = _spec_hash(signed.spec)
    if actual != signed_hash:
        raise TaskRejected(f"spec hashes to {actual[:12]}…, not the signed {signed_hash[:12]}…")
    return VerifiedTask(signed.id, signed.drone, signed.seq, signed.spec, actual)


def _spec_hash(spec: dict[str, Any]) -> str:
    try:
        return spec_sha256(spec)
    except (TypeError, ValueError) as exc:  # NaN or infinity: json.loads lets them through
        raise TaskRejected("spec cannot be put in canonical JSON") from exc
