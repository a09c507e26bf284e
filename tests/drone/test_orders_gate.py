"""drone/orders.py on its own: the seen-orders file across restarts, replays, pruning, and
``authorized_pilots`` read again when it changes (the e2e side: test_e2e_signed_orders.py)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from dragoon.drone.orders import SEEN_ORDERS, OrderGate, SeenOrders
from dragoon.shared import orders
from dragoon.shared.orders import OrderError
from dragoon.shared.trust import write_authorized_pilots

from tests.support.relay import new_signer

RECIPIENT = "SHA256:" + "A" * 43  # the drone the task key is sealed to (not checked here)


def _order(expires: int | None = None, drone: str = "box-1") -> orders.Order:
    return orders.task_order(target=orders.drone_target(drone), spec_sha256="0" * 64,
                             payload_sha256="0" * 64, recipients=[RECIPIENT], expires=expires)


def test_a_remembered_order_survives_a_restart_and_its_replay_is_refused(tmp_path: Path) -> None:
    seen = SeenOrders(tmp_path / SEEN_ORDERS)
    order = _order()
    seen.check(order, "t-one", strict=True)
    seen.remember(order, "t-one")
    assert oct((tmp_path / SEEN_ORDERS).stat().st_mode & 0o777) == "0o600"
    again = SeenOrders(tmp_path / SEEN_ORDERS)  # the drone restarted
    with pytest.raises(OrderError, match=r"already used \(for t-one\): a replay"):
        again.check(order, "t-two", strict=True)
    with pytest.raises(OrderError, match="a replay"):
        again.check(order, "t-one", strict=True)  # a task order: whichever task
    again.check(order, "t-one")  # a cancel or fetch delivered again: harmless


def test_expired_orders_are_forgotten_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / SEEN_ORDERS
    old = _order(expires=int(time.time()) - orders.CLOCK_SKEW - 10)
    live = _order()
    seen = SeenOrders(path)
    seen.remember(old, "t-old")
    seen.remember(live, "t-live")
    with open(path, "ab") as handle:
        handle.write(b"abcdef 12")  # a crash in the middle of a line
    again = SeenOrders(path)
    assert again.seen_ref(old.id) is None
    assert again.seen_ref(live.id) == "t-live"
    later = _order()
    again.remember(later, "t-later")  # on a line of its own, not glued to the torn one
    assert SeenOrders(path).seen_ref(later.id) == "t-later"
    again._prune()
    assert path.read_text() == (f"{live.id} {live.expires} t-live\n"
                                f"{later.id} {later.expires} t-later\n")


def test_a_ref_that_is_not_a_plain_id_is_refused(tmp_path: Path) -> None:
    seen = SeenOrders(tmp_path / SEEN_ORDERS)
    with pytest.raises(OrderError, match="not a plain"):
        seen.check(_order(), "t-x\nEVIL 9999999999 t-y")


def test_authorized_pilots_are_read_again_when_the_file_changes(tmp_path: Path) -> None:
    pilots = tmp_path / "authorized_pilots"
    alice, bob = new_signer(), new_signer()
    gate = OrderGate(tmp_path, pilots, name="box-1", labels=["gpu"])
    signed = orders.sign_order(alice, _order())
    with pytest.raises(OrderError, match="authorizes no pilot yet"):
        gate.check(signed.order.text, signed.signature, kind="task", ref="t-a")
    write_authorized_pilots(pilots, [alice.public_key])
    assert gate.check(signed.order.text, signed.signature, kind="task", ref="t-a") == signed.order
    write_authorized_pilots(pilots, [bob.public_key])  # alice revoked, no restart
    with pytest.raises(OrderError, match=re.escape(
            f"not signed by an authorized pilot (key {alice.fingerprint})")):
        gate.check(signed.order.text, signed.signature, kind="task", ref="t-a")
    os.utime(pilots)  # touched, unchanged: still bob only
    with pytest.raises(OrderError, match="not signed by an authorized pilot"):
        gate.check(signed.order.text, signed.signature, kind="task", ref="t-a")


def test_the_gate_checks_kind_target_and_labels(tmp_path: Path) -> None:
    pilots = tmp_path / "authorized_pilots"
    alice = new_signer()
    write_authorized_pilots(pilots, [alice.public_key])
    gate = OrderGate(tmp_path, pilots, name="box-1", labels=["gpu", "linux"])
    other = orders.sign_order(alice, _order(drone="box-2"))
    with pytest.raises(OrderError, match="order is for drone 'box-2', not 'box-1'"):
        gate.check(other.order.text, other.signature, kind="task", ref="t-a")
    fetch = orders.sign_order(alice, orders.fetch_order(drone="box-1", payload_sha256="ab" * 32))
    with pytest.raises(OrderError, match="a fetch order, not a task"):
        gate.check(fetch.order.text, fetch.signature, kind="task", ref="t-a")
    labels = orders.sign_order(alice, orders.task_order(
        target=orders.labels_target(["gpu", "a100"]), spec_sha256="0" * 64,
        payload_sha256="0" * 64, recipients=[RECIPIENT]))
    with pytest.raises(OrderError, match="lacks a100"):
        gate.check(labels.order.text, labels.signature, kind="task", ref="t-a")
    with pytest.raises(OrderError, match="no order signed by a pilot"):
        gate.check(None, None, kind="task", ref="t-a")


def test_a_task_order_is_appended_at_once_and_fsynced_by_sync(tmp_path: Path) -> None:
    """A task's order is written at its accept (task.json, fsynced, holds it too) and made
    durable by ``sync``, which the daemon runs before the task dir goes; a restart in between
    learns it from task.json (``recall``)."""
    seen = SeenOrders(tmp_path / SEEN_ORDERS)
    order = _order()
    seen.remember(order, "t-one", durable=False)
    assert seen._unsynced
    assert SeenOrders(tmp_path / SEEN_ORDERS).seen_ref(order.id) == "t-one"  # in the file
    seen.sync()
    assert not seen._unsynced
    fresh = SeenOrders(tmp_path / "other")
    fresh.recall(order.id, order.expires, "t-one")
    assert fresh.seen_ref(order.id) == "t-one"
    fresh.recall(order.id, "not a time", "t-two")  # already known: unchanged
    assert fresh.seen_ref(order.id) == "t-one"
