"""The stdin routes against a real relay: offsets, the window, and what is refused."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
from dragoon.shared.request_auth import sign_streamed_request

from tests.support.relay import (
    DroneClient,
    PilotSession,
    RelayProcess,
    encode_query,
    wait_until,
)
from tests.support.stored import stdin_held

CHUNK = 256 * 1024


def _feed(pilot: PilotSession, task: str, offset: int, data: bytes, *, eof: bool = False,
          wait: float = 0, sha256: str | None = None) -> httpx.Response:
    params: dict[str, Any] = {"offset": offset,
                              "sha256": sha256 or hashlib.sha256(data).hexdigest(),
                              "wait": wait}
    if eof:
        params["eof"] = True
    return pilot.post(f"/v1/tasks/{task}/stdin", params=params, content=data)


def _take(drone: DroneClient, task: str, offset: int, wait: float = 0) -> httpx.Response:
    return drone.get(f"/v1/worker/tasks/{task}/stdin", params={"offset": offset, "wait": wait})


def _dispatched(relay: RelayProcess, pilot: PilotSession, name: str, **spec: Any
                ) -> tuple[DroneClient, str]:
    drone = relay.drone(name, pilot=pilot)
    task = pilot.submit("cat", drone=name, **spec)["id"]
    handed = drone.poll(wait=5).json()["tasks"]
    assert [t["id"] for t in handed] == [task]
    return drone, task


def test_bytes_go_through_in_order_and_eof_arrives(relay: RelayProcess,
                                                   pilot: PilotSession) -> None:
    drone, task = _dispatched(relay, pilot, "d1", stdin=True)
    first = _feed(pilot, task, 0, b"hello ")
    assert first.status_code == 200, first.text
    assert first.json() == {"next_offset": 6, "eof": False}
    # A resend after a lost answer is acknowledged, not stored twice.
    assert _feed(pilot, task, 0, b"hello ").json()["next_offset"] == 6
    assert _feed(pilot, task, 6, b"world", eof=True).json() == {"next_offset": 11, "eof": True}
    got = _take(drone, task, 0)
    assert got.status_code == 200, got.text
    assert got.content == b"hello world"
    assert got.headers["X-Dragoon-Eof"] == "1"
    assert got.headers["X-Dragoon-Next-Offset"] == "11"
    # The drone's next offset acknowledged everything: the relay dropped the bytes.
    assert _take(drone, task, 11).content == b""
    held = stdin_held(relay.data_dir, task)
    assert held is not None and held["chunks"] == 0
    # Below what it acknowledged, the bytes are gone: said so, not made up.
    assert _take(drone, task, 0).json()["error"] == "offset_gap"
    # After eof nothing new is taken.
    assert _feed(pilot, task, 11, b"more").json()["error"] == "stdin_closed"


def test_a_gap_is_refused_with_the_expected_offset(relay: RelayProcess,
                                                   pilot: PilotSession) -> None:
    _drone, task = _dispatched(relay, pilot, "d2", stdin=True)
    assert _feed(pilot, task, 0, b"abc").status_code == 200
    gap = _feed(pilot, task, 10, b"xyz")
    assert gap.status_code == 409
    assert gap.json()["error"] == "offset_gap" and gap.json()["expected"] == 3


def test_the_window_bounds_what_the_relay_holds(tmp_path: Any) -> None:
    window = 2 * CHUNK
    with RelayProcess(tmp_path / "relay", config={"stdin_window": window}) as relay:
        pilot = relay.pilot("alice")
        drone, task = _dispatched(relay, pilot, "d3", stdin=True)
        offset = 0
        chunk = b"z" * CHUNK
        for _ in range(2):
            answer = _feed(pilot, task, offset, chunk)
            assert answer.status_code == 200, answer.text
            offset = answer.json()["next_offset"]
        full = _feed(pilot, task, offset, chunk, wait=0.5)
        assert full.status_code == 409
        assert full.json()["error"] == "window_full" and full.json()["expected"] == offset
        state = stdin_held(relay.data_dir, task)
        assert state is not None and state["end"] - state["acked"] == window
        # The drone takes some: its next offset makes room, and the held upload goes on.
        assert len(_take(drone, task, 0).content) == CHUNK
        assert _take(drone, task, CHUNK).status_code == 200
        assert _feed(pilot, task, offset, chunk, wait=5).status_code == 200


def test_what_is_refused(relay: RelayProcess, pilot: PilotSession) -> None:
    drone, plain = _dispatched(relay, pilot, "d4")
    # A task submitted without stdin takes none, and its drone reads none.
    refused = _feed(pilot, plain, 0, b"x")
    assert refused.status_code == 409 and refused.json()["error"] == "no_stdin"
    assert _take(drone, plain, 0).json()["error"] == "no_stdin"
    assert "stdin" not in pilot.get(f"/v1/tasks/{plain}").json()["spec"]

    task = pilot.submit("cat", drone="d4", stdin=True)["id"]
    assert pilot.get(f"/v1/tasks/{task}").json()["spec"]["stdin"] is True
    # A body that is not what the signature's claimed hash says.
    claim = hashlib.sha256(b"good").hexdigest()
    query = encode_query({"offset": 0, "sha256": claim})
    path = f"/v1/tasks/{task}/stdin"
    headers = sign_streamed_request(pilot.signer, method="POST", path=path, query=query,
                                    body_sha256=claim, token=pilot.token)
    lie = pilot.http.post(f"{path}?{query}", content=b"evil", headers=headers)
    assert lie.status_code == 400 and lie.json()["error"] == "hash_mismatch"
    # The same body, honestly claimed, but signed over another one: not let in at all.
    assert _feed(pilot, task, 0, b"evil", sha256=claim).status_code == 401
    # No hash claimed: the signature cannot cover the body.
    bare = pilot.post(f"/v1/tasks/{task}/stdin", params={"offset": 0}, content=b"x")
    assert bare.status_code == 401 and bare.json()["error"] == "bad_signature"
    # Another pilot feeds nobody else's task.
    mallory = relay.pilot("mallory")
    theirs = _feed(mallory, task, 0, b"x")
    assert theirs.status_code == 403 and theirs.json()["error"] == "forbidden"
    # A chunk over the cap.
    big = _feed(pilot, task, 0, b"b" * (CHUNK + 1))
    assert big.status_code == 413
    # Nothing of all that was stored.
    held = stdin_held(relay.data_dir, task)
    assert held is None or held["end"] == held["chunks"] == 0
    # A drone reads only its own tasks' stdin.
    other = relay.drone("d5", pilot=pilot)
    assert _take(other, task, 0).status_code == 404


def test_a_finished_task_takes_no_stdin(relay: RelayProcess, pilot: PilotSession) -> None:
    drone, task = _dispatched(relay, pilot, "d6", stdin=True)
    assert _feed(pilot, task, 0, b"unread").status_code == 200
    finished = drone.finish(task, exit_code=0, stdout_size=0, stderr_size=0)
    assert finished.status_code == 200, finished.text
    late = _feed(pilot, task, 6, b"late")
    assert late.status_code == 409 and late.json()["error"] == "task_finished"
    assert _take(drone, task, 0).json()["error"] == "task_finished"
    assert stdin_held(relay.data_dir, task) is None


def test_the_stdin_of_a_task_cancelled_while_queued_is_dropped(tmp_path: Any) -> None:
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.2}) as relay:
        pilot = relay.pilot("alice")
        relay.drone("d7", pilot=pilot)  # known, never polls: the task stays queued
        task = pilot.submit("cat", drone="d7", stdin=True)["id"]
        assert _feed(pilot, task, 0, b"never read").status_code == 200
        assert stdin_held(relay.data_dir, task) is not None
        assert pilot.post(f"/v1/tasks/{task}/cancel", json={}).json()["state"] == "cancelled"
        wait_until(lambda: stdin_held(relay.data_dir, task) is None, timeout=30,
                   message="stdin dropped")


def test_acknowledged_stdin_survives_a_relay_killed_at_once(tmp_path: Any) -> None:
    with RelayProcess(tmp_path / "relay") as relay:
        pilot = relay.pilot("alice")
        drone, task = _dispatched(relay, pilot, "d8", stdin=True)
        assert _feed(pilot, task, 0, b"before ").json()["next_offset"] == 7
        relay.kill9()
        relay.start()
        pilot.reconnect()
        drone.reconnect()
        # The pilot goes on where the relay says; a resend of the first chunk is harmless.
        assert _feed(pilot, task, 0, b"before ").json()["next_offset"] == 7
        assert _feed(pilot, task, 7, b"after", eof=True).json() == {"next_offset": 12,
                                                                     "eof": True}
        got = _take(drone, task, 0)
        assert got.content == b"before after" and got.headers["X-Dragoon-Eof"] == "1"
