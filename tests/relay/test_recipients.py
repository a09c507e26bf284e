"""The relay's side of "who to encrypt for" (docs/protocol.md, "Recipients"): it keeps what
the pilots and drones send, checked on the way in so that a client's mistake is a clear 422,
and hands it on; the pilots' own checks (tests/cli/test_recipients.py) are the ones that count."""

from __future__ import annotations

from collections.abc import Callable

from dragoon.shared.keys import PrivateKey
from dragoon.shared.pilots_list import (
    certify_pilot_x25519,
    make_pilots_list,
    sign_pilots_list,
)
from dragoon.shared.signers import KeyFileSigner
from dragoon.shared.trust import X25519Key, certify_x25519, x25519_text

from tests.support.relay import DroneClient, PilotSession, RelayProcess


def publish(pilot: PilotSession, x25519: bytes, signature: str) -> int:
    return pilot.request("PUT", "/v1/pilot/x25519", json={
        "x25519_public_key": x25519_text(x25519), "x25519_signature": signature}).status_code


def put_list(drone: DroneClient, text: str, signature: str) -> tuple[int, dict[str, object]]:
    answer = drone.request("PUT", "/v1/worker/pilots", json={"list": text,
                                                            "signature": signature})
    return answer.status_code, answer.json()


def test_a_pilot_key_is_kept_only_with_its_own_certificate(shared_pilot: PilotSession) -> None:
    x25519 = X25519Key.generate().public
    other = KeyFileSigner(PrivateKey.generate_ed25519())
    assert publish(shared_pilot, x25519, certify_pilot_x25519(other, x25519)) == 422
    # The drone-key namespace is not the pilot-key one.
    assert publish(shared_pilot, x25519, certify_x25519(shared_pilot.signer, x25519)) == 422
    assert publish(shared_pilot, x25519, certify_pilot_x25519(shared_pilot.signer,
                                                              x25519)) == 200


def test_a_drones_list_is_kept_when_signed_by_it_and_newer(
        shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]) -> None:
    drone = new_drone()
    me = shared_pilot.signer
    x25519 = X25519Key.generate().public
    assert publish(shared_pilot, x25519, certify_pilot_x25519(me, x25519)) == 200
    listing = make_pilots_list(drone.name, 10, [me.public_key])
    impostor = KeyFileSigner(PrivateKey.generate_ed25519())
    assert put_list(drone, listing.text(), sign_pilots_list(impostor, listing))[0] == 422
    for_other = make_pilots_list("someone-else", 10, [me.public_key])
    assert put_list(drone, for_other.text(), sign_pilots_list(drone.signer, for_other))[0] == 422
    assert put_list(drone, listing.text(), sign_pilots_list(drone.signer, listing)) == (
        200, {"version": 10, "stored": True})
    older = make_pilots_list(drone.name, 9, [])
    assert put_list(drone, older.text(), sign_pilots_list(drone.signer, older)) == (
        200, {"version": 10, "stored": False})

    answer = shared_pilot.get(f"/v1/workers/{drone.name}/recipients")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["pilots"]["list"] == listing.text()
    assert body["drone"]["public_key"] == drone.signer.public_key.openssh()
    assert body["pilot_keys"] == [{"fingerprint": me.fingerprint,
                                   "x25519_public_key": x25519_text(x25519),
                                   "x25519_signature": body["pilot_keys"][0][
                                       "x25519_signature"]}]
    assert shared_pilot.get("/v1/workers/no-such-drone/recipients").status_code == 404


def test_a_replaced_drones_list_is_not_served_for_its_successor(
        shared_relay: RelayProcess, shared_pilot: PilotSession) -> None:
    old = shared_relay.drone("rcpt-replaced", pilot=shared_pilot)
    listing = make_pilots_list(old.name, 1, [shared_pilot.signer.public_key])
    assert put_list(old, listing.text(), sign_pilots_list(old.signer, listing))[0] == 200
    shared_relay.drone("rcpt-replaced", pilot=shared_pilot, replace=True)
    body = shared_pilot.get("/v1/workers/rcpt-replaced/recipients").json()
    assert body["pilots"] is None and body["pilot_keys"] == []
