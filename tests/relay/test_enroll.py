"""Enrollment tokens: one use, expiry, hashed at rest, the relay key they pin, minted by API too."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dragoon.shared.enrollment import JoinToken
from dragoon.shared.keys import PublicKey

from tests.support.relay import (
    DroneClient,
    PilotSession,
    RelayProcess,
    enroll,
    init_relay,
    relay_db,
    wait_until,
)


def test_token_carries_relay_url_name_and_task_key_fingerprint(shared_relay: RelayProcess) -> None:
    token = JoinToken.decode(shared_relay.enroll("enr-a", ["gpu"]))
    drone = DroneClient.join(token.encode(), url=shared_relay.url)
    assert token.relay == shared_relay.url
    assert token.drone == drone.name == "enr-a"
    assert PublicKey.from_openssh(drone.relay_public_key).fingerprint == token.relay_key


def test_token_of_another_relay_pins_a_different_key(
    shared_relay: RelayProcess, tmp_path: Path
) -> None:
    init_relay(tmp_path / "other")
    foreign = JoinToken.decode(enroll(tmp_path / "other", "enr-b", url=shared_relay.url))
    ours = JoinToken.decode(shared_relay.enroll("enr-b"))
    drone = DroneClient.join(ours.encode(), url=shared_relay.url)
    served = PublicKey.from_openssh(drone.relay_public_key).fingerprint
    assert served == ours.relay_key
    assert served != foreign.relay_key  # a drone holding the foreign token refuses this relay


def test_token_of_another_relay_is_refused_here(shared_relay: RelayProcess, tmp_path: Path) -> None:
    init_relay(tmp_path / "other")
    foreign = enroll(tmp_path / "other", "enr-c", url=shared_relay.url)
    with pytest.raises(AssertionError, match="bad_enrollment_token"):
        DroneClient.join(foreign, url=shared_relay.url)


def test_token_is_single_use(shared_relay: RelayProcess) -> None:
    token = shared_relay.enroll("enr-d")
    DroneClient.join(token, url=shared_relay.url)
    with pytest.raises(AssertionError, match="bad_enrollment_token"):
        DroneClient.join(token, url=shared_relay.url)


def test_expired_token_is_refused(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    minted = shared_pilot.post("/v1/workers", json={"name": "enr-e", "ttl": 0.5}).json()
    token = minted["token"]
    wait_until(lambda: time.time() > minted["expires_at"], timeout=5, message="token expiry")
    with pytest.raises(AssertionError, match=r"expired|bad_enrollment_token"):
        DroneClient.join(token, url=shared_relay.url)


def test_tokens_are_stored_hashed(shared_relay: RelayProcess) -> None:
    secret = JoinToken.decode(shared_relay.enroll("enr-f")).secret
    with relay_db(shared_relay.data_dir) as conn:
        drones = [r["drone"] for r in conn.execute("SELECT drone FROM enrollments")]
        stored = repr([tuple(r) for r in conn.execute("SELECT * FROM enrollments")])
    assert "enr-f" in drones
    assert secret not in stored
    raw = b"".join(  # SQLite: not in the file either (nor its WAL)
        path.read_bytes() for path in shared_relay.data_dir.glob("relay.db*")
    )
    assert secret.encode() not in raw


def test_pilot_mints_a_token_through_the_api(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    answer = shared_pilot.post("/v1/workers", json={"name": "enr-g", "labels": ["cpu"], "ttl": 60})
    assert answer.status_code == 200
    token = answer.json()["token"]
    drone = DroneClient.join(token, url=shared_relay.url)
    listed = {d["name"]: d for d in shared_pilot.get("/v1/workers").json()["drones"]}
    assert listed[drone.name]["labels"] == ["cpu"]
    events = shared_pilot.get("/v1/audit", params={"limit": 20}).json()["events"]
    assert any(e["action"] == "enroll" and e["target"] == "enr-g" for e in events)


def test_init_with_a_non_ed25519_key_is_invalid(shared_relay: RelayProcess) -> None:
    import httpx

    token = JoinToken.decode(shared_relay.enroll("enr-h"))
    answer = httpx.post(f"{shared_relay.url}/v1/worker/init", json={
        "name": "enr-h", "secret": token.secret, "public_key": "ssh-rsa AAAA",
    })
    assert (answer.status_code, answer.json()["error"]) == (422, "invalid")


@pytest.mark.parametrize(("extra", "says"), [
    ({"x25519_public_key": "AAAA", "x25519_signature": "AAAA"}, "32 bytes"),
    ({"x25519_public_key": "A" * 43 + "=", "x25519_signature": "not base64!"}, "not base64"),
    ({"x25519_public_key": "A" * 43 + "="}, "come together"),
    ({"binding": "A" * 43 + "="}, "a binding needs them"),
], ids=["short-x25519", "bad-signature", "x25519-alone", "binding-alone"])
def test_init_refuses_malformed_trust_fields_and_spends_nothing(
        shared_relay: RelayProcess, extra: dict[str, str], says: str) -> None:
    """The relay checks only their form (the pilots check the rest): garbage is a 422 before
    the token is looked at, so the token still works."""
    from tests.support.relay import new_signer, post_open

    token = JoinToken.decode(shared_relay.enroll("enr-t" + str(len(says))))
    signer = new_signer()
    with DroneClient(shared_relay.url, signer) as client:
        answer = post_open(client.http, "/v1/worker/init", {
            "name": token.drone, "secret": token.secret,
            "public_key": signer.public_key.openssh(), **extra})
    assert answer.status_code == 422, answer.text
    assert says in answer.json()["detail"]
    DroneClient.join(token.encode(), url=shared_relay.url).close()
