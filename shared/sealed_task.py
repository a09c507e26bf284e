"""A task sealed for its drone and its pilots, and opened again: one module for both ends.

The pilot seals (``seal_task``): a fresh task key; the whole spec, canonical JSON, as the
payload under it (bound to the order's id); the key wrapped to every drone the order may
go to and every pilot who may read the task. The relay is given the spec's clear part
(``TaskSpec.clear``), the payload and the wraps, and the signed order, which holds the
hashes of the first two and the drones' fingerprints.

The drone, and any pilot reading the task, opens it (``open_task``) and believes nothing
the relay says on the way: the payload must hash to what the order signs, open under
the key from the reader's own wrap, parse as a spec by the one rule, and agree with the
clear part the relay acted on. A relay that swaps a wrap, edits the payload or the clear
fields, or moves the payload under another order fails one of those, with a reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dragoon.shared import e2e
from dragoon.shared.canonical import canonical_json, sha256_hex, spec_sha256
from dragoon.shared.orders import Order
from dragoon.shared.spec import SpecError, TaskSpec, parse_spec


@dataclass(frozen=True)
class Recipient:
    """Whom a task key is wrapped to: ``fingerprint`` that of the recipient's signing key
    (a drone's ed25519 key, a pilot's SSH key), ``x25519`` its certified encryption key
    (checked by cockpit/client/recipients.py before it gets here)."""

    fingerprint: str
    x25519: bytes


@dataclass(frozen=True)
class SealedTask:
    clear: dict[str, Any]
    payload: str  # base64 of nonce || ciphertext
    wraps: dict[str, str]  # recipient id -> base64 sealed box of the task key
    task_key: bytes
    payload_sha256: str

    @property
    def spec_sha256(self) -> str:
        return spec_sha256(self.clear)

    def wire(self) -> dict[str, Any]:
        """The submit body's three fields for it."""
        return {"spec": self.clear, "payload": self.payload, "wraps": self.wraps}


class BadSealedSpec(SpecError):
    """The sealed spec opened, and breaks the shared rule; ``task_key`` seals the reason."""

    def __init__(self, error: SpecError, task_key: bytes) -> None:
        super().__init__(error.field, error.problem)
        self.task_key = task_key


@dataclass(frozen=True)
class OpenedTask:
    spec: TaskSpec
    task_key: bytes


def seal_task(spec: TaskSpec, *, order_id: str, recipients: Iterable[Recipient],
              key: bytes | None = None,
              wraps: Mapping[str, str] | None = None) -> SealedTask:
    """Seal under ``key`` (a fresh one if None). A key may seal several payloads (a sweep's
    trials, a trial's spares): each is bound to its own order id, so none opens as another
    (docs/security.md, "What the relay sees of a job"). ``wraps``: that key's wraps for
    these recipients, made by an earlier call (``SealedTask.wraps``): a 500-trial sweep
    wraps its key once per recipient, not once per trial and recipient."""
    key = e2e.new_task_key() if key is None else key
    sealed = e2e.seal_payload(key, canonical_json(spec.to_json()), order_id=order_id)
    wanted = list(recipients)
    if wraps is None or any(r.fingerprint not in wraps for r in wanted):
        wraps = {r.fingerprint: e2e.wrap_key(key, r.x25519) for r in wanted}
    else:
        wraps = {r.fingerprint: wraps[r.fingerprint] for r in wanted}
    return SealedTask(spec.clear(), e2e.b64(sealed), wraps, key, sha256_hex(sealed))


def open_task(order: Order, *, clear: Mapping[str, Any], payload: object, wrap: object,
              x25519_secret: bytes) -> OpenedTask:
    """The spec and task key of a task, once every check holds; ``E2EError`` says which
    did not (the relay, or someone between it and us, altered the task), ``BadSealedSpec``
    that the spec its pilot sealed breaks the shared rule."""
    if order.kind != "task":
        raise e2e.E2EError(f"a {order.kind} order is not a task's")
    if wrap is None:
        raise e2e.E2EError("the task key is not wrapped for this key (the pilot sealed the "
                           "task to others)")
    sealed = e2e.unb64(payload, what="the task's payload")
    if sha256_hex(sealed) != order.fields["payload_sha256"]:
        raise e2e.E2EError("the task's payload is not the one its pilot signed")
    if spec_sha256(dict(clear)) != order.fields["spec_sha256"]:
        raise e2e.E2EError("the task's clear fields are not the ones its pilot signed")
    key = e2e.unwrap_key(wrap, x25519_secret)
    plain = e2e.open_payload(key, sealed, order_id=order.id)
    try:
        raw = json.loads(plain)
    except ValueError:
        raise e2e.E2EError("the task's sealed spec is not JSON") from None
    # A pilot signed and sealed it: a spec the rule refuses is that pilot's mistake, told in
    # the rule's own words (the ``bad_spec`` of docs/protocol.md), not tampering; the words
    # may quote sealed fields, so the reader gets the key to seal them with.
    try:
        spec = parse_spec(raw)
    except SpecError as exc:
        raise BadSealedSpec(exc, key) from None
    if spec.clear() != dict(clear):
        raise e2e.E2EError("the task's clear fields disagree with its sealed spec")
    return OpenedTask(spec, key)
