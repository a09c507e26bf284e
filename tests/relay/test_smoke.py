"""The support harness itself: a relay starts, a pilot logs in, a drone enrolls."""

from __future__ import annotations

from tests.support.relay import PilotSession, RelayProcess


def test_relay_serves_health_without_signature(relay: RelayProcess) -> None:
    import httpx

    answer = httpx.get(f"{relay.url}/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"ok": True}


def test_enrolled_drone_is_listed_for_pilot(relay: RelayProcess, pilot: PilotSession) -> None:
    relay.drone("gpu-1", ["gpu"])
    drones = pilot.get("/v1/workers").json()["drones"]
    assert [(d["name"], d["labels"], d["state"]) for d in drones] == [("gpu-1", ["gpu"], "pending")]
