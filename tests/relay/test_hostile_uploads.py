"""Uploads from the attacker's side: a streamed body is read only after its signature verified.

The blob route takes up to ``artifact_max`` bytes. A caller who knows a
drone's fingerprint (it is public: it is in every request the drone makes)
and a task id must not be able to make the relay write any of it, nor learn
from the answer whether a task id exists. A drone that signs one hash and
sends other bytes gets nothing stored.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from dragoon.shared.request_auth import sign_streamed_request

from tests.relay._rawhttp import RawHttp
from tests.support.relay import (
    DroneClient,
    PilotSession,
    RelayProcess,
    encode_query,
    new_signer,
    wait_until,
)
from tests.support.stored import blob_stored, upload_in_progress, upload_leftovers

BIG = 64 * 1024 * 1024  # what the attacker claims to send
PIECE = 256 * 1024


def _task(pilot: PilotSession, drone: DroneClient) -> str:
    task = pilot.submit("make", drone=drone.name)
    drone.poll()
    return str(task["id"])


def _tmp_bytes(relay: RelayProcess) -> int:
    """Above 0 while an upload is being written (blobs/tmp, or an open upload transaction on
    PostgreSQL): every upload in progress lands there first."""
    return upload_in_progress(relay.data_dir)


def _tmp_files(relay: RelayProcess) -> list[str]:
    """What refused or unfinished uploads left behind: nothing, on either backend."""
    return ["leftover"] * upload_leftovers(relay.data_dir)


def _blob_stored(relay: RelayProcess, digest: str) -> bool:
    return blob_stored(relay.data_dir, digest)


def _streamed_headers(drone: DroneClient, query: str, digest: str,
                      **overrides: Any) -> dict[str, str]:
    """What a real drone sends: RE-V1 over the claimed hash, the body not read."""
    return sign_streamed_request(drone.signer, method="POST", path="/v1/worker/blob",
                                 query=query, body_sha256=digest, **overrides)


ATTACKER = new_signer()


def _forged_headers(drone: DroneClient, query: str, digest: str) -> dict[str, str]:
    """The drone's public fingerprint, a signature by the attacker's own key."""
    headers = sign_streamed_request(ATTACKER, method="POST", path="/v1/worker/blob",
                                    query=query, body_sha256=digest)
    headers["X-RE-Key-Fingerprint"] = drone.signer.fingerprint
    return headers


def _upload_query(task: str, digest: str, size: int, path: str = "big.bin") -> str:
    return encode_query({"task": task, "path": path, "sha256": digest, "size": size})


@pytest.fixture
def task_on(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> tuple[DroneClient, str]:
    drone = new_drone()
    return drone, _task(shared_pilot, drone)


def test_a_forged_upload_is_answered_401_before_its_body_is_sent(
    shared_relay: RelayProcess, task_on: tuple[DroneClient, str]
) -> None:
    """Only the head and 16 KiB of a 64 MiB body go out: the answer comes anyway, and the
    relay hangs up rather than swallow the rest."""
    drone, task = task_on
    digest = "ab" * 32
    query = _upload_query(task, digest, BIG)
    raw = RawHttp(shared_relay.url)
    try:
        raw.send_head(f"/v1/worker/blob?{query}", _forged_headers(drone, query, digest),
                      length=BIG, first=b"x" * 16384)
        status, headers, body = raw.read_answer()
        assert (status, json.loads(body)["error"]) == (
            401, "bad_signature")
        assert _tmp_files(shared_relay) == []
        # Behind a balancer (the replicas test backend) the client's connection is the
        # balancer's: HAProxy answers the 401 the relay sent before hanging up on it, and
        # reads the rest of the body itself rather than close on the client.
        if shared_relay.balancer is None:
            assert headers.get("connection") == "close"
            assert raw.closed_by_peer()
    finally:
        raw.close()


def test_an_unsigned_upload_is_answered_401_before_its_body_is_sent(
    shared_relay: RelayProcess, task_on: tuple[DroneClient, str]
) -> None:
    _drone, task = task_on
    query = _upload_query(task, "cd" * 32, BIG)
    raw = RawHttp(shared_relay.url)
    try:
        raw.send_head(f"/v1/worker/blob?{query}", {}, length=BIG)
        status, _headers, body = raw.read_answer()
        assert (status, json.loads(body)["error"]) == (
            401, "bad_request_signature_headers")
        assert _tmp_files(shared_relay) == []
    finally:
        raw.close()


def test_a_forged_64_mib_upload_never_reaches_the_disk(
    shared_relay: RelayProcess, task_on: tuple[DroneClient, str]
) -> None:
    """Streamed by a generator, as a client would: blobs/tmp is measured before every piece."""
    drone, task = task_on
    digest = "ef" * 32
    query = _upload_query(task, digest, BIG)
    seen: list[int] = []

    def body() -> Iterator[bytes]:
        piece = b"\0" * PIECE
        for _ in range(BIG // PIECE):
            seen.append(_tmp_bytes(shared_relay))
            yield piece

    headers = {**_forged_headers(drone, query, digest), "Content-Length": str(BIG)}
    with httpx.Client(base_url=shared_relay.url, timeout=60) as client:
        try:
            answer: httpx.Response | None = client.post(f"/v1/worker/blob?{query}",
                                                        content=body(), headers=headers)
        except httpx.TransportError:
            answer = None  # the relay hung up on the rest of the body: refused all the same
    if answer is not None:
        assert (answer.status_code, answer.json()["error"]) == (401, "bad_signature")
    assert max(seen) == 0, f"blobs/tmp grew to {max(seen)} bytes for a forged upload"
    assert _tmp_files(shared_relay) == []
    assert httpx.get(f"{shared_relay.url}/healthz").status_code == 200


def test_an_upload_without_a_claimed_hash_is_not_taken_as_an_empty_body(
    shared_relay: RelayProcess, task_on: tuple[DroneClient, str]
) -> None:
    """Signed over the empty body and no ``sha256=``: the bytes that follow are unsigned."""
    drone, task = task_on
    query = encode_query({"task": task, "path": "a.bin", "size": 5})
    headers = drone.signed_headers("POST", "/v1/worker/blob", query, b"")
    answer = drone.http.post(f"/v1/worker/blob?{query}", content=b"hello", headers=headers)
    assert (answer.status_code, answer.json()["error"]) == (401, "bad_signature")
    assert _tmp_files(shared_relay) == []


def test_an_upload_claiming_two_hashes_is_refused(task_on: tuple[DroneClient, str]) -> None:
    """The route must check the very hash the signature covered: one claim, no choice."""
    drone, task = task_on
    data = b"payload"
    digest = hashlib.sha256(data).hexdigest()
    query = encode_query({"task": task, "path": "a.bin", "sha256": "0" * 64, "size": len(data)})
    query += f"&sha256={digest}"
    answer = drone.http.post(f"/v1/worker/blob?{query}", content=data,
                             headers=_streamed_headers(drone, query, digest))
    assert (answer.status_code, answer.json()["error"]) == (401, "bad_signature")


def test_forged_uploads_do_not_tell_which_task_ids_exist(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient],
    task_on: tuple[DroneClient, str],
) -> None:
    """Own task, another drone's task, a task that does not exist: one and the same 401."""
    drone, own = task_on
    other = new_drone()
    foreign = _task(shared_pilot, other)
    answers = []
    for task in (own, foreign, "t-aaaaaaaaaa"):
        digest = hashlib.sha256(b"x").hexdigest()
        query = _upload_query(task, digest, 1)
        answer = drone.http.post(f"/v1/worker/blob?{query}", content=b"x",
                                 headers=_forged_headers(drone, query, digest))
        answers.append((answer.status_code, answer.json()))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == 401


def test_uploads_for_a_missing_task_and_another_drone_s_task_answer_alike(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient],
    task_on: tuple[DroneClient, str],
) -> None:
    drone, _own = task_on
    foreign = _task(shared_pilot, new_drone())
    answers = []
    for task in (foreign, "t-aaaaaaaaaa"):
        digest = hashlib.sha256(b"x").hexdigest()
        query = _upload_query(task, digest, 1)
        answer = drone.http.post(f"/v1/worker/blob?{query}", content=b"x",
                                 headers=_streamed_headers(drone, query, digest))
        answers.append((answer.status_code, answer.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 404


def test_fetch_uploads_for_a_missing_and_another_drone_s_fetch_answer_alike(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone, other = new_drone(), new_drone()
    foreign = shared_pilot.post(f"/v1/workers/{other.name}/fetch", json={"path": "/x"}).json()
    answers = []
    for fetch_id in (foreign["id"], "f-aaaaaaaaaa"):
        answer = drone.blob(b"x", fetch=fetch_id)
        answers.append((answer.status_code, answer.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 404
    shown = shared_pilot.get(f"/v1/fetches/{foreign['id']}").json()
    assert shown["state"] == "pending"


@pytest.mark.parametrize("route", ["log", "finish", "message"])
def test_other_drone_routes_answer_alike_for_missing_and_foreign_tasks(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient], route: str
) -> None:
    drone = new_drone()
    foreign = _task(shared_pilot, new_drone())
    answers = []
    for task in (foreign, "t-aaaaaaaaaa"):
        if route == "log":
            answer = drone.log(task, "stdout", 0, b"hello")
        elif route == "finish":
            answer = drone.finish(task)
        else:
            answer = drone.message(task, 0, "hi")
        answers.append((answer.status_code, answer.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 404


def test_a_signed_upload_for_a_foreign_task_is_answered_before_its_body_is_sent(
    shared_relay: RelayProcess, shared_pilot: PilotSession,
    new_drone: Callable[..., DroneClient],
) -> None:
    """The route decides on the task before it reads: no byte goes to disk for a refusal."""
    drone = new_drone()
    foreign = _task(shared_pilot, new_drone())
    digest = "12" * 32
    query = _upload_query(foreign, digest, BIG)
    raw = RawHttp(shared_relay.url)
    try:
        raw.send_head(f"/v1/worker/blob?{query}", _streamed_headers(drone, query, digest),
                      length=BIG)
        status, _headers, _body = raw.read_answer()
        assert status == 404
        assert _tmp_files(shared_relay) == []
    finally:
        raw.close()


def test_a_pilot_on_the_upload_route_is_refused_before_the_body(
    shared_relay: RelayProcess, shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    _drone, task = task_on
    digest = "34" * 32
    query = _upload_query(task, digest, BIG)
    headers = sign_streamed_request(shared_pilot.signer, method="POST",
                                    path="/v1/worker/blob", query=query, body_sha256=digest,
                                    token=shared_pilot.token)
    raw = RawHttp(shared_relay.url)
    try:
        raw.send_head(f"/v1/worker/blob?{query}", headers, length=BIG)
        status, _headers, body = raw.read_answer()
        assert (status, json.loads(body)["error"]) == (
            403, "forbidden")
        assert _tmp_files(shared_relay) == []
    finally:
        raw.close()


def test_a_body_other_than_the_signed_hash_is_refused_and_leaves_nothing(
    shared_relay: RelayProcess, shared_pilot: PilotSession, task_on: tuple[DroneClient, str]
) -> None:
    """Correctly signed over one hash, another body of the same length: nothing is kept."""
    drone, task = task_on
    claimed, sent = os.urandom(1 << 20), os.urandom(1 << 20)
    digest = hashlib.sha256(claimed).hexdigest()
    query = _upload_query(task, digest, len(sent), path="swapped.bin")
    answer = drone.http.post(f"/v1/worker/blob?{query}", content=sent,
                             headers=_streamed_headers(drone, query, digest))
    assert (answer.status_code, answer.json()["error"]) == (400, "hash_mismatch")
    assert not _blob_stored(shared_relay, digest)
    assert not _blob_stored(shared_relay, hashlib.sha256(sent).hexdigest())
    assert _tmp_files(shared_relay) == []
    assert shared_pilot.get(f"/v1/tasks/{task}/artifact").json()["artifacts"] == []
    # The same request again with the right bytes is a new request (a new nonce): it is kept.
    fixed = drone.http.post(f"/v1/worker/blob?{query}", content=claimed,
                            headers=_streamed_headers(drone, query, digest))
    assert fixed.status_code == 200, fixed.text
    assert _blob_stored(shared_relay, digest)


def test_a_chunked_body_shorter_than_its_claim_is_refused_and_leaves_nothing(
    shared_relay: RelayProcess, task_on: tuple[DroneClient, str]
) -> None:
    """No Content-Length to refuse by: the relay counts as it streams, and cleans up."""
    drone, task = task_on
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    query = _upload_query(task, digest, len(data) + 1, path="short.bin")

    def body() -> Iterator[bytes]:
        yield data[:100_000]
        yield data[100_000:]

    answer = drone.http.post(f"/v1/worker/blob?{query}", content=body(),
                             headers=_streamed_headers(drone, query, digest))
    assert (answer.status_code, answer.json()["error"]) == (400, "size_mismatch")
    assert not _blob_stored(shared_relay, digest)
    assert _tmp_files(shared_relay) == []


def test_a_content_length_other_than_the_claim_is_refused_before_the_body(
    shared_relay: RelayProcess, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    digest = "56" * 32
    query = _upload_query(task, digest, 10)
    raw = RawHttp(shared_relay.url)
    try:
        raw.send_head(f"/v1/worker/blob?{query}", _streamed_headers(drone, query, digest),
                      length=BIG)
        status, _headers, body = raw.read_answer()
        assert (status, json.loads(body)["error"]) == (
            413, "too_large")
        assert _tmp_files(shared_relay) == []
    finally:
        raw.close()


def test_a_drone_hanging_up_mid_upload_leaves_no_temp_file(
    shared_relay: RelayProcess, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    digest = "78" * 32
    query = _upload_query(task, digest, BIG, path="cut.bin")
    raw = RawHttp(shared_relay.url)
    try:
        raw.send_head(f"/v1/worker/blob?{query}", _streamed_headers(drone, query, digest),
                      length=BIG, first=b"y" * PIECE)
        # Signed, so this one is written as it comes; then the drone goes away.
        wait_until(lambda: _tmp_bytes(shared_relay) > 0, message="the upload reaches blobs/tmp")
    finally:
        raw.close()
    wait_until(lambda: _tmp_files(shared_relay) == [], message="blobs/tmp is emptied")
    assert not _blob_stored(shared_relay, digest)


def test_a_replayed_upload_is_refused_before_its_body(
    shared_relay: RelayProcess, task_on: tuple[DroneClient, str]
) -> None:
    drone, task = task_on
    data = b"once"
    digest = hashlib.sha256(data).hexdigest()
    query = _upload_query(task, digest, len(data), path="once.bin")
    headers = _streamed_headers(drone, query, digest)
    assert drone.http.post(f"/v1/worker/blob?{query}", content=data,
                           headers=headers).status_code == 200
    raw = RawHttp(shared_relay.url)
    try:
        raw.send_head(f"/v1/worker/blob?{query}", headers, length=BIG)
        status, _headers, body = raw.read_answer()
        assert (status, json.loads(body)["error"]) == (
            401, "replayed_nonce")
        assert _tmp_files(shared_relay) == []
    finally:
        raw.close()
