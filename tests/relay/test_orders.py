"""The relay's early check of the pilot's signed order (docs/api.md, "Signed orders"), and the
order carried to the drone beside the relay's envelope, the cancel and the fetch.

The drone's own check is the one that counts (tests/drone/test_e2e_signed_orders.py);
these hold the relay to a clear 4xx for an honest pilot's mistake, early.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from dragoon.shared import orders
from dragoon.shared.canonical import spec_sha256

from tests.support.relay import DroneClient, PilotSession, new_signer


def _signed(signer: Any, order: orders.Order) -> dict[str, str]:
    return orders.sign_order(signer, order).wire()


def _submit(pilot: PilotSession, body: dict[str, Any]) -> Any:
    return pilot.post("/v1/tasks", json=body)


def test_a_submit_without_an_order_is_refused(shared_pilot: PilotSession,
                                              new_drone: Callable[..., DroneClient]) -> None:
    drone = new_drone()
    sealed = shared_pilot.seal({"spec": {"command": "true"}, "drone": drone.name})
    answer = _submit(shared_pilot, {**sealed.body, "order": None})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "order_missing"


def test_a_submit_with_an_order_of_another_key_is_refused(
        shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]) -> None:
    drone = new_drone()
    sealed = shared_pilot.seal({"spec": {"command": "true"}, "drone": drone.name})
    answer = _submit(shared_pilot, {**sealed.body, **_signed(new_signer(), sealed.order())})
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "order_not_yours"


def test_a_submit_whose_order_says_something_else_is_refused(
        shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]) -> None:
    drone, other = new_drone(), new_drone()
    sealed = shared_pilot.seal({"spec": {"command": "true"}, "drone": drone.name})
    cases = [
        (sealed.order(spec_sha256=spec_sha256({"command": "true"})), "spec hash"),
        (sealed.order(payload_sha256="0" * 64), "payload hash"),
        (sealed.order(target={"drone": other.name}), "target"),
        (orders.fetch_order(drone=drone.name, payload_sha256="0" * 64), "fetch order"),
    ]
    for order, said in cases:
        answer = _submit(shared_pilot, {**sealed.body, **_signed(shared_pilot.signer, order)})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "order_mismatch", answer.text
        assert said in answer.json()["detail"]


def test_an_expired_or_malformed_order_is_refused(
        shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]) -> None:
    drone = new_drone()
    sealed = shared_pilot.seal({"spec": {"command": "true"}, "drone": drone.name})
    old = sealed.order(expires=int(time.time()) - 3600)
    answer = _submit(shared_pilot, {**sealed.body, **_signed(shared_pilot.signer, old)})
    assert answer.status_code == 400 and answer.json()["error"] == "bad_order", answer.text
    assert "expired" in answer.json()["detail"]
    good = _signed(shared_pilot.signer, sealed.order())
    answer = _submit(shared_pilot, {**sealed.body, "order": good["order"] + " ",
                                    "order_signature": good["order_signature"]})
    assert answer.status_code == 400 and answer.json()["error"] == "bad_order", answer.text


def test_the_order_rides_to_the_drone_with_the_task_cancel_and_fetch(
        shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]) -> None:
    drone = new_drone()
    task = shared_pilot.submit("sleep 5", drone=drone.name)
    assert len(task["order_id"]) == orders.ORDER_ID_LENGTH
    handed = drone.poll(wait=5).json()["tasks"]
    assert [t["id"] for t in handed] == [task["id"]]
    order, key = orders.read_signed(handed[0]["order"], handed[0]["order_signature"])
    assert key == shared_pilot.signer.public_key
    assert order.id == task["order_id"]
    assert order.fields["spec_sha256"] == spec_sha256(handed[0]["spec"])
    assert drone.open(handed[0])["command"] == "sleep 5"  # sealed to this drone's key
    assert "command" not in handed[0]["spec"] and "sleep 5" not in str(handed[0])

    # A running task's cancel needs the pilot's cancel order; the helper signs one.
    unsigned = shared_pilot.post(f"/v1/tasks/{task['id']}/cancel", json={"order": None})
    assert unsigned.status_code == 400 and unsigned.json()["error"] == "order_missing"
    wrong = orders.cancel_order(target={"drone": drone.name}, task=task["id"],
                                task_order_id=orders.new_order_id(), grace=None)
    answer = shared_pilot.post(f"/v1/tasks/{task['id']}/cancel",
                               json=_signed(shared_pilot.signer, wrong))
    assert answer.status_code == 400 and answer.json()["error"] == "order_mismatch"
    assert shared_pilot.post(f"/v1/tasks/{task['id']}/cancel", json={}).status_code == 200
    cancels = drone.poll(wait=5, running=[task["id"]]).json()["cancel"]
    assert [c["id"] for c in cancels] == [task["id"]]
    cancel, _key = orders.read_signed(cancels[0]["order"], cancels[0]["order_signature"])
    assert (cancel.kind, cancel.fields["task"], cancel.fields["task_order"]) == (
        "cancel", task["id"], task["order_id"])
    # A drone that refuses the cancel's order says so; the pilot reads it on the task.
    reason = f"refused by drone {drone.name}: not signed by an authorized pilot (key x)"
    drone.poll(running=[task["id"]], refused_cancels=[{"id": task["id"], "reason": reason}])
    shown = shared_pilot.get(f"/v1/tasks/{task['id']}").json()
    assert (shown["state"], shown["cancel_requested"], shown["cancel_refused"]) == (
        "dispatched", False, reason)

    fetch = shared_pilot.post(f"/v1/workers/{drone.name}/fetch", json={"path": "/etc/hostname"})
    assert fetch.status_code in (200, 201), fetch.text
    fetches = drone.poll(wait=5, running=[task["id"]]).json()["fetches"]
    signed, _key = orders.read_signed(fetches[0]["order"], fetches[0]["order_signature"])
    # The order signs the sealed path's hash; the path itself is only in the payload.
    assert signed.fields["fetch"] == {
        "payload_sha256": hashlib.sha256(base64.b64decode(fetches[0]["payload"])).hexdigest()}
    assert "/etc/hostname" not in json.dumps(fetches)
    other = _signed(shared_pilot.signer,
                    orders.fetch_order(drone=drone.name, payload_sha256="0" * 64))
    answer = shared_pilot.post(f"/v1/workers/{drone.name}/fetch",
                               json={"path": "/etc/hostname", **other})
    assert answer.status_code == 400 and answer.json()["error"] == "order_mismatch"
