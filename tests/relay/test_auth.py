"""RE-V1 verification: every 401 code of PROTOCOL.md, the nonce memory, roles, logout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
from dragoon.shared.request_auth import new_nonce

from tests.support.relay import DroneClient, PilotSession, RelayProcess, new_signer


def _raw(pilot: PilotSession, headers: dict[str, str], path: str = "/v1/workers") -> httpx.Response:
    return pilot.http.get(path, headers=headers)


def test_missing_headers_are_rejected(shared_pilot: PilotSession) -> None:
    answer = shared_pilot.get("/v1/workers", sign=False)
    assert answer.status_code == 401
    assert answer.json()["error"] == "bad_request_signature_headers"


def test_malformed_nonce_is_rejected(shared_pilot: PilotSession) -> None:
    headers = shared_pilot.signed_headers("GET", "/v1/workers", nonce="NOT-HEX")
    answer = _raw(shared_pilot, headers)
    assert (answer.status_code, answer.json()["error"]) == (401, "bad_request_signature_headers")


def test_stale_timestamp_is_rejected(shared_pilot: PilotSession) -> None:
    headers = shared_pilot.signed_headers("GET", "/v1/workers", timestamp=int(time.time()) - 120)
    answer = _raw(shared_pilot, headers)
    assert (answer.status_code, answer.json()["error"]) == (401, "stale_timestamp")


def test_unknown_key_is_rejected(shared_relay: RelayProcess) -> None:
    with DroneClient(shared_relay.url, new_signer()) as stranger:
        answer = stranger.get("/v1/workers")
    assert (answer.status_code, answer.json()["error"]) == (401, "unknown_key")


def test_unknown_bearer_token_is_bad_session(shared_pilot: PilotSession) -> None:
    with PilotSession(shared_pilot.url, shared_pilot.signer, token="nope") as other:
        answer = other.get("/v1/workers")
    assert (answer.status_code, answer.json()["error"]) == (401, "bad_session")


def test_token_used_with_another_key_is_fingerprint_mismatch(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> None:
    bob = shared_relay.pilot("bob")
    with PilotSession(shared_relay.url, bob.signer, token=shared_pilot.token) as thief:
        answer = thief.get("/v1/workers")
    assert (answer.status_code, answer.json()["error"]) == (401, "fingerprint_mismatch")


def test_tampered_body_is_bad_signature(shared_pilot: PilotSession) -> None:
    body = b'{"name": "x1"}'
    headers = shared_pilot.signed_headers("POST", "/v1/workers", body=body)
    headers["content-type"] = "application/json"
    answer = shared_pilot.http.post("/v1/workers", content=b'{"name": "x2"}', headers=headers)
    assert (answer.status_code, answer.json()["error"]) == (401, "bad_signature")


def test_signature_over_another_query_is_bad_signature(shared_pilot: PilotSession) -> None:
    headers = shared_pilot.signed_headers("GET", "/v1/tasks", query="limit=1")
    answer = shared_pilot.http.get("/v1/tasks?limit=2", headers=headers)
    assert (answer.status_code, answer.json()["error"]) == (401, "bad_signature")


def test_replayed_nonce_is_rejected(shared_pilot: PilotSession) -> None:
    headers = shared_pilot.signed_headers("GET", "/v1/workers", nonce=new_nonce())
    first = _raw(shared_pilot, headers)
    second = _raw(shared_pilot, headers)
    assert first.status_code == 200
    assert (second.status_code, second.json()["error"]) == (401, "replayed_nonce")


def test_concurrent_requests_with_one_nonce_let_exactly_one_pass(
    shared_pilot: PilotSession,
) -> None:
    headers = shared_pilot.signed_headers("GET", "/v1/workers", nonce=new_nonce())
    barrier = threading.Barrier(8)
    codes: list[int] = []
    lock = threading.Lock()

    def fire() -> None:
        with httpx.Client(base_url=shared_pilot.url) as client:
            barrier.wait()
            code = client.get("/v1/workers", headers=headers).status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200] + [401] * 7


def test_drone_on_pilot_route_is_forbidden(new_drone: Callable[..., DroneClient]) -> None:
    answer = new_drone().get("/v1/tasks")
    assert (answer.status_code, answer.json()["error"]) == (403, "forbidden")


def test_pilot_on_drone_route_is_forbidden(shared_pilot: PilotSession) -> None:
    answer = shared_pilot.post("/v1/worker/poll", json={"wait": 0})
    assert (answer.status_code, answer.json()["error"]) == (403, "forbidden")


def test_logout_revokes_the_token(shared_relay: RelayProcess) -> None:
    carol = shared_relay.pilot("carol")
    assert carol.post("/v1/auth/logout").json() == {"ok": True}
    answer = carol.get("/v1/workers")
    assert (answer.status_code, answer.json()["error"]) == (401, "bad_session")


def test_open_routes_need_no_signature(shared_relay: RelayProcess) -> None:
    assert httpx.get(f"{shared_relay.url}/healthz").json() == {"ok": True}
    answer = httpx.post(f"{shared_relay.url}/v1/auth/challenge",
                        json={"fingerprint": new_signer().fingerprint})
    assert answer.status_code == 200


def test_unknown_route_still_requires_a_signature(shared_relay: RelayProcess) -> None:
    answer = httpx.get(f"{shared_relay.url}/v1/nothing-here")
    assert answer.status_code == 401
