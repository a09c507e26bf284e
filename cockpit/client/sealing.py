"""The pilot's half of sealed tasks: its encryption key, its task keys, and opening tasks.

Whom a task is sealed to is cockpit/client/recipients.py's (every key checked against this
pilot's own ``known_drones`` and the drones' signed pilots lists); the pilot is always one
of them, with its X25519 key (cockpit/client/pilot_key.py), so it can read the task back.

Opening is the other way: a task as the relay shows it has the clear part of its spec
only; ``PilotKeys.open`` checks the order's signature, opens this pilot's wrap and the
payload, and puts the whole spec back, or says why it could not (``sealed``). Task keys
are kept in memory by task id for the task's output, artifacts and messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dragoon.cockpit.client.enrollments import known_drones_path
from dragoon.cockpit.client.pilot_key import load_or_make_pilot_key
from dragoon.shared import orders
from dragoon.shared.keys import PublicKey
from dragoon.shared.trust import TrustFileError, X25519Key, read_known_drones

if TYPE_CHECKING:
    from dragoon.shared.sealed_task import OpenedTask, Recipient, SealedTask
    from dragoon.shared.spec import TaskSpec

UNTRUSTED = "untrusted_drone"  # RelayError code: no drone this pilot trusts to seal to
TAMPERED = "tampered"  # RelayError code: what the relay handed over does not hold


# PyNaCl (libsodium) is loaded by the first task sealed or opened, not by every command's start.
def seal_task(spec: TaskSpec, *, order_id: str, recipients: Iterable[Recipient],
              key: bytes | None = None,
              wraps: Mapping[str, str] | None = None) -> SealedTask:
    from dragoon.shared import sealed_task

    return sealed_task.seal_task(spec, order_id=order_id, recipients=recipients, key=key,
                                 wraps=wraps)


class PilotKeys:
    """This pilot's known drones and encryption key, read on first need."""

    def __init__(self, own: PublicKey, env: Mapping[str, str] = os.environ) -> None:
        self.own = own
        self.env = env
        self._x25519: X25519Key | None = None
        self._task_keys: dict[str, bytes] = {}
        # Keys whose orders this pilot believes: its own; the drones' published
        # authorized_pilots add to it (cockpit/client/recipients.py).
        self.trusted_signers: dict[bytes, PublicKey] = {own.blob: own}

    @property
    def x25519(self) -> X25519Key:
        if self._x25519 is None:
            self._x25519 = load_or_make_pilot_key(self.env)
        return self._x25519

    def believe(self, signers: Iterable[PublicKey]) -> None:
        """Keys a drone this pilot trusts authorizes (its checked, signed pilots list)."""
        self.trusted_signers.update({key.blob: key for key in signers})

    def unknown_signer(self, task: Mapping[str, Any]) -> bool:
        try:
            _order, signer = orders.read_signed(task.get("order"), task.get("order_signature"))
        except orders.OrderError:
            return False
        return signer.blob not in self.trusted_signers

    def drones_of(self, task: Mapping[str, Any]) -> list[str]:
        """The drones whose pilots list may vouch for the task's signer: its drone, or
        (queued for labels) the known drones its order is sealed to."""
        if task.get("drone"):
            return [str(task["drone"])]
        try:
            order = orders.parse_order(task.get("order"))
        except orders.OrderError:
            return []
        wanted = set(order.fields.get("recipients") or [])
        try:
            known = read_known_drones(known_drones_path(self.env))
        except TrustFileError:
            return []
        return sorted(name for name, drone in known.items() if drone.fingerprint in wanted)

    def remember(self, task_id: str, key: bytes) -> None:
        self._task_keys[task_id] = key

    def task_key(self, task_id: str) -> bytes | None:
        return self._task_keys.get(task_id)

    def open(self, task: dict[str, Any]) -> dict[str, Any]:
        """The task with its whole spec, or with ``sealed`` saying why it stays sealed."""
        if not isinstance(task, dict) or "payload" not in task:
            return task
        from dragoon.shared.e2e import E2EError
        from dragoon.shared.sealed_task import open_task

        opened: OpenedTask
        try:
            order, signer = orders.read_signed(task.get("order"), task.get("order_signature"))
            if signer.blob not in self.trusted_signers:
                raise E2EError(f"its order is signed by {signer.fingerprint}, a key no drone "
                               "you trust authorizes")
            wraps = task.get("wraps") or {}
            opened = open_task(order, clear=task.get("spec") or {}, payload=task["payload"],
                               wrap=wraps.get(self.own.fingerprint) if isinstance(
                                   wraps, dict) else None,
                               x25519_secret=self.x25519.secret)
        except (E2EError, orders.OrderError) as exc:
            return {**task, "sealed": exc.detail, **_texts(task, None)}
        self._task_keys[str(task.get("id"))] = opened.task_key
        return {**task, "spec": opened.spec.to_json(), **_texts(task, opened.task_key)}


def _texts(task: Mapping[str, Any], key: bytes | None) -> dict[str, Any]:
    """The task's error and notes opened (the drone seals what it says about a task it
    opened: shared/e2e.py ``seal_text``); one that does not open says so, in place."""
    from dragoon.shared.e2e import E2EError, is_sealed_text, open_text

    task_id = str(task.get("id"))

    def opened(value: Any, name: str) -> Any:
        if not is_sealed_text(value):
            return value
        if key is None:
            return "(sealed)"
        try:
            return open_text(key, value, task_id=task_id, name=name)
        except E2EError as exc:
            return f"(a sealed {name} that does not open: {exc.detail})"

    # One text named "error": the reason a drone refused a task it opened (bad_spec), or
    # why one it ran ended without an exit status; a task has one or the other.
    shown = {"error": opened(task.get("error"), "error")}
    notes = task.get("notes")
    if isinstance(notes, list):
        shown["notes"] = [opened(note, f"note-{i}") for i, note in enumerate(notes)]
    return shown

