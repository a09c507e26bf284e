"""Pilot-signed orders (issue 13, piece 2): one builder, parser and verifier for all three kinds.

An order is what a pilot asks a drone to do, in canonical JSON (shared/canonical.py)
signed with the pilot's SSH key (file or ssh-agent) as an SSHSIG in the
``dragoon-submit-v1`` namespace, so ``ssh-keygen -Y verify`` checks it too
(docs/protocol.md, "Orders"). The relay carries an order and its signature beside
its own envelope, but cannot make one: the drone verifies it under its own
``authorized_pilots`` before anything runs. Three kinds:

- ``task``:   ``{"v", "kind", "id", "target", "expires", "spec_sha256", "payload_sha256",
  "recipients"}``: ``spec_sha256`` is the hash of the spec's clear fields (what the relay
  must read to run the queue: shared/spec.py ``TaskSpec.clear``), ``payload_sha256`` that
  of the sealed payload holding the whole spec (shared/e2e.py, shared/sealed_task.py), and
  ``recipients`` the ed25519 fingerprints of the drones the task key is sealed to (sorted,
  each once): a relay can hand the task to none but these
- ``cancel``: ``{"v", "kind", "id", "target", "expires", "task", "task_order", "grace"}``
- ``fetch``:  ``{"v", "kind", "id", "target", "expires", "fetch": {"payload_sha256"}}``:
  the hash of the sealed payload holding the path, under a fetch key of its own wrapped to
  the drone and the pilot (shared/sealed_files.py ``seal_fetch``): the relay never reads it

``id`` is pilot-chosen (128 random bits, base32 lowercase, 26 characters) and is
what the drone remembers to refuse a replay; ``target`` is ``{"drone": NAME}`` or
``{"labels": [...]}`` (sorted, no duplicates, ``[]`` for any drone; a task only);
``expires`` is unix seconds. The signed bytes are the order's canonical JSON exactly: a parser that
meets any other spelling of the same object refuses it, so an order has one
reading everywhere.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from dragoon.shared import sshsig
from dragoon.shared.canonical import canonical_json, is_sha256_hex
from dragoon.shared.constants import NS_SUBMIT
from dragoon.shared.errors import DragoonError, SignatureError
from dragoon.shared.keys import PublicKey
from dragoon.shared.signers import Signer
from dragoon.shared.spec import SpecError, check_drone_name, check_label

ORDER_VERSION: Final = 2  # 2: the task order signs a sealed payload (issue 13, piece 3)
KINDS: Final = ("task", "cancel", "fetch")
ORDER_ID_LENGTH: Final = 26  # 128 bits in base32 (5 bits a character), no padding
_ORDER_ID = re.compile(r"[a-z2-7]{26}")
# An order is a few hundred bytes; the cap bounds what a drone parses for a relay.
MAX_ORDER_BYTES: Final = 8192
# The drone accepts an order this many seconds past its expiry (clocks differ a little).
CLOCK_SKEW: Final = 300
# The longest life an order may ask for: bounds how long a drone remembers its id.
MAX_LIFETIME: Final = 31 * 86400
# Without ``start_within``, a task order is good for this long (docs/protocol.md).
DEFAULT_TASK_LIFETIME: Final = 7 * 86400
# A cancel or fetch waits for an offline drone like a task does (the relay keeps it until
# the drone polls); a replay of one can only repeat it for the task or fetch it names.
DEFAULT_CONTROL_LIFETIME: Final = 7 * 86400
MAX_FETCH_PATH: Final = 4096

_FIELDS: Final = {
    "task": frozenset({"v", "kind", "id", "target", "expires", "spec_sha256",
                       "payload_sha256", "recipients"}),
    "cancel": frozenset({"v", "kind", "id", "target", "expires", "task", "task_order",
                         "grace"}),
    "fetch": frozenset({"v", "kind", "id", "target", "expires", "fetch"}),
}


class OrderError(DragoonError):
    """An order that can't be read or doesn't hold; ``detail`` is the reason, one line."""

    code = "bad_order"


@dataclass(frozen=True)
class Order:
    """A parsed order: ``fields`` is the JSON object, ``text`` its canonical (signed) form."""

    fields: dict[str, Any]
    text: str

    @property
    def kind(self) -> str:
        return str(self.fields["kind"])

    @property
    def id(self) -> str:
        return str(self.fields["id"])

    @property
    def target(self) -> dict[str, Any]:
        return dict(self.fields["target"])

    @property
    def expires(self) -> int:
        return int(self.fields["expires"])


@dataclass(frozen=True)
class SignedOrder:
    """An order with its signature, as it travels: ``order`` text, ``signature`` base64."""

    order: Order
    signature: str

    def wire(self) -> dict[str, str]:
        """The two fields every request and envelope carries it as."""
        return {"order": self.order.text, "order_signature": self.signature}


def new_order_id() -> str:
    """128 random bits as 26 lowercase base32 characters: the pilot's choice, unguessable."""
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


def drone_target(name: str) -> dict[str, Any]:
    return {"drone": name}


def labels_target(labels: Iterable[str]) -> dict[str, Any]:
    """Labels as the relay stores them: sorted, once each."""
    return {"labels": sorted(set(labels))}


def _make(kind: str, target: dict[str, Any], expires: int | None, lifetime: int,
          order_id: str | None, **rest: Any) -> Order:
    now = int(time.time())
    fields = {"v": ORDER_VERSION, "kind": kind, "id": order_id or new_order_id(),
              "target": target, "expires": now + lifetime if expires is None else int(expires),
              **rest}
    return parse_order(canonical_json(fields).decode("utf-8"))


def task_order(*, target: dict[str, Any], spec_sha256: str, payload_sha256: str,
               recipients: Iterable[str], expires: int | None = None,
               start_within: int | None = None, expires_in: float | None = None,
               order_id: str | None = None) -> Order:
    """A task order: ``expires`` given, else submit + ``start_within`` (the relay cancels a
    task not started by then anyway), else + the submit's ``expires_in`` (how long it may
    stay queued), else + 7 days; never more than 31 days (``MAX_LIFETIME``)."""
    if start_within is not None:
        lifetime = int(start_within)
    elif expires_in is not None:
        lifetime = int(expires_in) + 1
    else:
        lifetime = DEFAULT_TASK_LIFETIME
    return _make("task", target, expires, min(lifetime, MAX_LIFETIME), order_id,
                 spec_sha256=spec_sha256, payload_sha256=payload_sha256,
                 recipients=sorted(set(recipients)))


def cancel_order(*, target: dict[str, Any], task: str, task_order_id: str,
                 grace: int | None, expires: int | None = None,
                 order_id: str | None = None) -> Order:
    """Cancel relay task ``task``, whose order was ``task_order_id``; ``grace`` None = the
    task's own grace."""
    return _make("cancel", target, expires, DEFAULT_CONTROL_LIFETIME, order_id, task=task,
                 task_order=task_order_id, grace=grace)


def fetch_order(*, drone: str, payload_sha256: str, expires: int | None = None,
                order_id: str | None = None) -> Order:
    """A fetch of the file whose path the sealed payload of hash ``payload_sha256`` holds."""
    return _make("fetch", drone_target(drone), expires, DEFAULT_CONTROL_LIFETIME, order_id,
                 fetch={"payload_sha256": payload_sha256})


def sign_order(signer: Signer, order: Order) -> SignedOrder:
    """The pilot's SSHSIG over the order's canonical bytes, namespace ``dragoon-submit-v1``."""
    blob = signer.sign(NS_SUBMIT, order.text.encode("utf-8"))
    return SignedOrder(order, sshsig.encode_b64(blob))


# -- parsing ---------------------------------------------------------------------------------


def _check_target(target: object, kind: str) -> None:
    if not isinstance(target, dict) or len(target) != 1:
        raise OrderError("order's target must be {\"drone\": NAME} or {\"labels\": [...]}")
    if "drone" in target:
        try:
            check_drone_name(target["drone"])
        except SpecError as exc:
            raise OrderError(f"order's target: {exc}") from None
    elif "labels" in target:
        labels = target["labels"]
        if kind == "fetch":
            raise OrderError("a fetch order names one drone, not labels")
        if not isinstance(labels, list):  # [] is every drone, as in a submit
            raise OrderError("order's target labels must be a list")
        try:
            for label in labels:
                check_label(label)
        except SpecError as exc:
            raise OrderError(f"order's target: {exc}") from None
        if labels != sorted(set(labels)):
            raise OrderError("order's target labels must be sorted, each once")
    else:
        raise OrderError("order's target must be {\"drone\": NAME} or {\"labels\": [...]}")


MAX_RECIPIENTS: Final = 256  # drones one task order may be sealed to
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def _check_recipients(recipients: object) -> None:
    if (not isinstance(recipients, list) or not recipients
            or len(recipients) > MAX_RECIPIENTS):
        raise OrderError(f"order's recipients must be a list of 1 to {MAX_RECIPIENTS} drone "
                         "key fingerprints")
    for fingerprint in recipients:
        if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
            raise OrderError("order's recipients must be SHA256: key fingerprints")
    if recipients != sorted(set(recipients)):
        raise OrderError("order's recipients must be sorted, each once")


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_order(text: object) -> Order:
    """The order in ``text`` (its canonical JSON), every field checked for form; OrderError
    names the first that is wrong. Nothing here says who signed it or whether it is due."""
    if not isinstance(text, str) or not text:
        raise OrderError("no order")
    if len(text.encode("utf-8")) > MAX_ORDER_BYTES:
        raise OrderError(f"order is larger than {MAX_ORDER_BYTES} bytes")
    try:
        fields = json.loads(text)
    except ValueError:
        raise OrderError("order is not JSON") from None
    if not isinstance(fields, dict):
        raise OrderError("order is not a JSON object")
    try:
        canonical = canonical_json(fields).decode("utf-8")
    except ValueError:
        raise OrderError("order cannot be put in canonical JSON") from None
    if canonical != text:
        raise OrderError("order is not in canonical JSON (keys sorted, no spaces)")
    if fields.get("v") != ORDER_VERSION or not _int(fields.get("v")):
        raise OrderError(f"order version {fields.get('v')!r} is not {ORDER_VERSION}")
    kind = fields.get("kind")
    if kind not in KINDS:
        raise OrderError(f"order kind {kind!r} is not one of {', '.join(KINDS)}")
    missing = sorted(_FIELDS[kind] - fields.keys())
    extra = sorted(fields.keys() - _FIELDS[kind])
    if missing:
        raise OrderError(f"{kind} order has no {missing[0]!r}")
    if extra:
        raise OrderError(f"{kind} order has an unknown field {extra[0]!r}")
    if not isinstance(fields["id"], str) or not _ORDER_ID.fullmatch(fields["id"]):
        raise OrderError("order id must be 26 lowercase base32 characters")
    if not _int(fields["expires"]) or fields["expires"] <= 0:
        raise OrderError("order's expires must be a positive integer (unix seconds)")
    _check_target(fields["target"], kind)
    if kind == "task":
        for name in ("spec_sha256", "payload_sha256"):
            if not is_sha256_hex(fields[name]):
                raise OrderError(f"order's {name} must be 64 lowercase hex digits")
        _check_recipients(fields["recipients"])
    elif kind == "cancel":
        task, order_id, grace = fields["task"], fields["task_order"], fields["grace"]
        if not isinstance(task, str) or not task or len(task) > 100:
            raise OrderError("cancel order's task must be a task id")
        if not isinstance(order_id, str) or not _ORDER_ID.fullmatch(order_id):
            raise OrderError("cancel order's task_order must be an order id")
        if grace is not None and (not _int(grace) or grace < 0):
            raise OrderError("cancel order's grace must be null or a non-negative integer")
    else:
        fetch = fields["fetch"]
        if not isinstance(fetch, dict) or set(fetch) != {"payload_sha256"}:
            raise OrderError("fetch order's fetch must be {\"payload_sha256\": HEX}")
        if not is_sha256_hex(fetch["payload_sha256"]):
            raise OrderError("fetch order's payload_sha256 must be 64 lowercase hex digits")
    return Order(fields, text)


def signer_of(order: Order, signature: object) -> PublicKey:
    """The key whose valid ``dragoon-submit-v1`` SSHSIG over the order ``signature`` is."""
    if not isinstance(signature, str) or not signature:
        raise OrderError("order is not signed")
    try:
        return sshsig.verify(sshsig.decode_b64(signature), NS_SUBMIT,
                             order.text.encode("utf-8"))
    except SignatureError as exc:
        raise OrderError(f"order's signature does not verify ({exc})") from None


def read_signed(raw: object, signature: object) -> tuple[Order, PublicKey]:
    """Parse the order and check its signature (by whom is the caller's question)."""
    order = parse_order(raw)
    return order, signer_of(order, signature)


def check_authorized(key: PublicKey, authorized: Iterable[PublicKey]) -> None:
    """OrderError unless ``key`` is one of ``authorized`` (a drone's ``authorized_pilots``)."""
    keys = list(authorized)
    if not keys:
        raise OrderError("this drone authorizes no pilot yet (its authorized_pilots is "
                         "empty; on the drone: dragoon drone authorize KEY)")
    if not any(key.blob == other.blob for other in keys):
        raise OrderError(f"not signed by an authorized pilot (key {key.fingerprint})")


def check_unexpired(order: Order, now: float | None = None) -> None:
    now = time.time() if now is None else now
    if order.expires + CLOCK_SKEW < now:
        raise OrderError(f"order {order.id} expired at {order.expires} "
                         f"({int(now - order.expires)} s ago)")
    if order.expires > now + MAX_LIFETIME + CLOCK_SKEW:
        raise OrderError(f"order {order.id} asks to live longer than {MAX_LIFETIME} s")


def check_target(order: Order, *, name: str, labels: Iterable[str]) -> None:
    """OrderError unless the order's target is this drone (by name, or labels it has)."""
    target = order.target
    if "drone" in target:
        if target["drone"] != name:
            raise OrderError(f"order is for drone {target['drone']!r}, not {name!r}")
        return
    missing = sorted(set(target["labels"]) - set(labels))
    if missing:
        raise OrderError(f"order is for labels {','.join(target['labels'])}; this drone "
                         f"lacks {','.join(missing)}")
