"""Task verification (PROTOCOL.md, RE-TASK-V1): pure, so every reject reason is unit-tested.

The drone spawns nothing before ``verify_task`` answers None. A reason is a
short human line; the daemon reports it as ``bad_task_signature: <reason>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dragoon.shared import sshsig
from dragoon.shared.canonical import canonical_task, spec_sha256
from dragoon.shared.constants import NS_TASK, TASK_VERSION
from dragoon.shared.errors import SignatureError
from dragoon.shared.keys import PublicKey
from dragoon.shared.spec import SpecError, TaskSpec
from dragoon.shared.spec import parse_spec as parse_task_spec


@dataclass(frozen=True)
class SignedTask:
    """A task as the relay hands it, fields checked for type (not yet for trust)."""

    id: str
    drone: str
    seq: int
    spec: dict[str, Any]
    signature: str
    spec_sha256: str | None  # present when the relay sends it; else computed


def parse_task(raw: object) -> SignedTask | str:
    """The task's fields, or why it cannot even be read."""
    if not isinstance(raw, dict):
        return "task is not a JSON object"
    task_id, drone, seq = raw.get("id"), raw.get("drone"), raw.get("seq")
    spec, signature = raw.get("spec"), raw.get("signature")
    if not isinstance(task_id, str) or not task_id:
        return "task has no id"
    if not isinstance(drone, str):
        return "task has no drone name"
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return "task has no valid sequence number"
    if not isinstance(spec, dict):
        return "task has no spec object"
    if not isinstance(signature, str) or not signature:
        return "task is not signed"
    claimed = raw.get("spec_sha256")
    if claimed is not None and not isinstance(claimed, str):
        return "task's spec_sha256 is not a string"
    return SignedTask(task_id, drone, seq, spec, signature, claimed)


def _signed_message(task: SignedTask, spec_hash: str) -> bytes:
    return f"{TASK_VERSION}\n{task.id}\n{task.drone}\n{task.seq}\n{spec_hash}".encode()


def verify_task(
    task: SignedTask, *, relay_key: PublicKey, drone_name: str, last_seq: int
) -> str | None:
    """None when the task may run; else the reason, checked in PROTOCOL.md's order.

    Signature first (against the pinned relay key only), then our own name,
    then the sequence number, then the spec's hash. When the relay sends the
    signed hash beside the spec, a spec altered in transit is named as such;
    without it, an altered spec breaks the signature, which says so.
    """
    if task.spec_sha256 is not None:
        message = _signed_message(task, task.spec_sha256)
    else:
        message = canonical_task(task_id=task.id, drone=task.drone, seq=task.seq, spec=task.spec)
    try:
        blob = sshsig.decode_b64(task.signature)
        sshsig.verify(blob, NS_TASK, message, relay_key)
    except SignatureError as exc:
        return f"signature does not verify against the pinned relay key ({exc})"
    if task.drone != drone_name:
        return f"task is for drone {task.drone!r}, not {drone_name!r}"
    if task.seq <= last_seq:
        return f"sequence {task.seq} is not above {last_seq}"
    try:
        actual = spec_sha256(task.spec)
    except (TypeError, ValueError):
        return "spec cannot be put in canonical JSON"
    if task.spec_sha256 is not None and actual != task.spec_sha256:
        return f"spec hashes to {actual[:12]}…, not the signed {task.spec_sha256[:12]}…"
    return None


# What the drone runs: a spec that passed shared/spec.py, the rule the relay applied too.
Spec = TaskSpec


def parse_spec(spec: object) -> Spec | str:
    """The typed spec, or why it cannot be run (reported as ``bad_spec: <reason>``).

    The reason is shared/spec.py's, word for word the relay's 422 for the same
    spec, so a drone refusing what its relay let through names the same rule.
    """
    try:
        return parse_task_spec(spec)
    except SpecError as exc:
        return str(exc)
