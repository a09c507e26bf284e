"""The relay's early check of a pilot's signed order (docs/api.md, "Signed orders").

The drone is the one that must not be fooled (it checks every order under its own
``authorized_pilots``); the relay checks first so that an honest pilot's mistake
(an old client, a wrong target, a spec changed after signing) is a clear 4xx at
submit, not a task failed later by the drone. An order must be present,
well formed, unexpired, signed by the key of the session that sends it, and say
what the request says: same kind, spec hash, target, task, grace or path.
"""

from __future__ import annotations

from typing import Any, Final

from dragoon.relay.errors import ApiError
from dragoon.shared import orders
from dragoon.shared.orders import Order, OrderError

ERR_MISSING: Final = "order_missing"
ERR_BAD: Final = "bad_order"
ERR_SIGNER: Final = "order_not_yours"
ERR_MISMATCH: Final = "order_mismatch"


def check(text: str | None, signature: str | None, *, kind: str, fingerprint: str) -> Order:
    """The order, once it is present, readable, unexpired, and signed by ``fingerprint``."""
    if not text or not signature:
        raise ApiError(400, ERR_MISSING, f"a {kind} needs the pilot's signed order "
                       "(order, order_signature); upgrade the client (docs/protocol.md)")
    try:
        order, key = orders.read_signed(text, signature)
        orders.check_unexpired(order)
    except OrderError as exc:
        raise ApiError(400, ERR_BAD, exc.detail) from None
    if order.kind != kind:
        raise ApiError(400, ERR_MISMATCH, f"the order is a {order.kind} order, not a {kind}")
    if key.fingerprint != fingerprint:
        raise ApiError(403, ERR_SIGNER, f"the order is signed by {key.fingerprint}, not by "
                       f"this session's key {fingerprint}")
    return order


def same(order: Order, field: str, wanted: Any, what: str) -> None:
    """400 ``order_mismatch`` when the signed ``field`` is not the request's."""
    if order.fields.get(field) != wanted:
        raise ApiError(400, ERR_MISMATCH, f"the order's {what} ({order.fields.get(field)!r}) "
                       f"is not the request's ({wanted!r})")
