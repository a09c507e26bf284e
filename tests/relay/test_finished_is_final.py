"""Finished is final: once a task's outcome is recorded, its drone can add nothing to it.

Output, messages, artifacts and a second outcome are refused with 409
``task_finished``; a resend of what the relay already holds (the drone lost
the answer, or restarted before it cleaned up) is still acknowledged, so a
well-behaved drone never loops. ``lost`` is not finished: the drone's late
report replaces it. Fetches are the same: a failed fetch takes no file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared.request_auth import sign_streamed_request

from tests.relay._rawhttp import RawHttp
from tests.support.relay import (
    DroneClient,
    PilotSession,
    RelayProcess,
    encode_query,
    wait_until,
)
from tests.support.stored import blob_stored, log_size, upload_leftovers


def _running(pilot: PilotSession, drone: DroneClient, **submit: Any) -> str:
    task = pilot.submit("run", drone=drone.name, **submit)
    drone.poll()
    drone.poll(running=[task["id"]], started=[{"id": task["id"]}])
    return str(task["id"])


def _error(answer: Any) -> tuple[int, str]:
    return answer.status_code, answer.json().get("error", "")


def _log_size(relay: RelayProcess, task: str, stream: str = "stdout") -> int:
    return log_size(relay.data_dir, task, stream)


@pytest.fixture
def finished(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> tuple[DroneClient, str]:
    """A task that wrote ``hello\\n`` to stdout, one message and one artifact, then succeeded."""
    drone = new_drone()
    task = _running(shared_pilot, drone)
    assert drone.log(task, "stdout", 0, b"hello\n").status_code == 200
    assert drone.message(task, 0, "half way").status_code == 200
    assert drone.blob(b"result", task=task, path="out.txt").status_code == 200
    assert drone.finish(task, stdout_size=6).json() == {"ok": True, "state": "succeeded"}
    return drone, task


# ----- output -----


def test_new_output_after_finish_is_refused_with_the_final_size(
    shared_relay: RelayProcess, shared_pilot: PilotSession, finished: tuple[DroneClient, str]
) -> None:
    drone, task = finished
    answer = drone.log(task, "stdout", 6, b"late bytes\n")
    assert _error(answer) == (409, "task_finished")
    assert (answer.json()["size"], answer.json()["state"]) == (6, "succeeded")
    assert shared_pilot.get(f"/v1/tasks/{task}/log").content == b"hello\n"
    assert _log_size(shared_relay, task) == 6


def test_a_stream_that_was_empty_at_finish_stays_empty(
    shared_relay: RelayProcess, finished: tuple[DroneClient, str]
) -> None:
    drone, task = finished
    answer = drone.log(task, "stderr", 0, b"late\n")
    assert _error(answer) == (409, "task_finished")
    assert answer.json()["size"] == 0
    assert _log_size(shared_relay, task, "stderr") == 0


def test_a_chunk_overlapping_the_end_after_finish_is_refused(
    shared_relay: RelayProcess, finished: tuple[DroneClient, str]
) -> None:
    drone, task = finished
    answer = drone.log(task, "stdout", 3, b"lo\nmore")
    assert _error(answer) == (409, "task_finished")
    assert _log_size(shared_relay, task) == 6


def test_a_gap_after_finish_is_task_finished_not_offset_gap(
    finished: tuple[DroneClient, str]
) -> None:
    """``offset_gap`` would send the drone back to ship more; there is nothing more to ship."""
    drone, task = finished
    assert _error(drone.log(task, "stdout", 100, b"x")) == (409, "task_finished")


def test_a_resend_of_stored_output_after_finish_is_acknowledged(
    finished: tuple[DroneClient, str]
) -> None:
    """The drone lost the finish's answer, or restarted before its cleanup: it resends."""
    drone, task = finished
    assert drone.log(task, "stdout", 0, b"hello\n").json() == {"next_offset": 6}
    assert drone.log(task, "stdout", 2, b"llo").json() == {"next_offset": 6}
    assert drone.log(task, "stdout", 6, b"").json() == {"next_offset": 6}


def test_a_truncated_log_still_acknowledges_and_drops_after_finish(tmp_path: Path) -> None:
    """Past the cap every chunk was dropped and acknowledged; the drone may resend any of them."""
    with RelayProcess(tmp_path / "relay", config={"output_cap": 10}) as relay:
        pilot = relay.pilot()
        drone = relay.drone("capped", pilot=pilot)
        task = _running(pilot, drone)
        drone.log(task, "stdout", 0, b"0123456789abcdef")
        assert drone.finish(task, stdout_size=16).status_code == 200
        size = _log_size(relay, task)
        assert drone.log(task, "stdout", 10, b"abcdef").json() == {"next_offset": 16}
        assert _log_size(relay, task) == size


def test_output_for_a_task_the_drone_rejected_is_refused(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    task = shared_pilot.submit("run", drone=drone.name)["id"]
    drone.poll()
    drone.poll(rejected=[{"id": task, "reason": "bad_task_signature: test"}])
    assert shared_pilot.get(f"/v1/tasks/{task}").json()["state"] == "failed"
    assert _error(drone.log(task, "stdout", 0, b"x")) == (409, "task_finished")
    assert _error(drone.message(task, 0, "x")) == (409, "task_finished")


# ----- messages -----


def test_a_new_message_after_finish_is_refused(
    shared_pilot: PilotSession, finished: tuple[DroneClient, str]
) -> None:
    drone, task = finished
    answer = drone.message(task, 1, "too late")
    assert _error(answer) == (409, "task_finished")
    assert answer.json()["state"] == "succeeded"
    texts = [m["text"] for m in shared_pilot.inbox() if m["task"] == task]
    assert texts == ["half way"]


def test_a_resent_message_after_finish_is_acknowledged_with_its_id(
    shared_pilot: PilotSession, finished: tuple[DroneClient, str]
) -> None:
    drone, task = finished
    stored = [m for m in shared_pilot.get("/v1/messages").json()["messages"]
              if m["task"] == task]
    assert drone.message(task, 0, "half way").json() == {"id": stored[0]["id"]}


# ----- artifacts -----


def test_an_artifact_uploaded_before_finish_is_kept(
    shared_pilot: PilotSession, finished: tuple[DroneClient, str]
) -> None:
    """The drone's order: exit, artifacts, messages, finish."""
    _drone, task = finished
    listed = shared_pilot.get(f"/v1/tasks/{task}/artifact").json()["artifacts"]
    assert [(a["path"], a["size"]) for a in listed] == [("out.txt", 6)]


def test_a_new_artifact_after_finish_is_refused_and_nothing_is_stored(
    shared_relay: RelayProcess, shared_pilot: PilotSession, finished: tuple[DroneClient, str]
) -> None:
    drone, task = finished
    data = b"smuggled in later"
    answer = drone.blob(data, task=task, path="late.txt")
    assert _error(answer) == (409, "task_finished")
    digest = hashlib.sha256(data).hexdigest()
    assert not blob_stored(shared_relay.data_dir, digest)
    assert upload_leftovers(shared_relay.data_dir) == 0
    paths = [a["path"] for a in shared_pilot.get(f"/v1/tasks/{task}/artifact").json()["artifacts"]]
    assert paths == ["out.txt"]


def test_new_content_for_a_stored_artifact_after_finish_is_refused(
    shared_pilot: PilotSession, finished: tuple[DroneClient, str]
) -> None:
    drone, task = finished
    answer = drone.blob(b"other", task=task, path="out.txt")
    assert answer.status_code == 409 and answer.json()["error"] in ("conflict", "task_finished")
    got = shared_pilot.get(f"/v1/tasks/{task}/artifact", params={"path": "out.txt"})
    assert got.content == b"result"


def test_a_resent_artifact_after_finish_is_acknowledged_without_its_body(
    shared_relay: RelayProcess, finished: tuple[DroneClient, str]
) -> None:
    """The stored file is the signed hash: the relay answers before it takes any bytes."""
    drone, task = finished
    digest = hashlib.sha256(b"result").hexdigest()
    query = encode_query({"task": task, "path": "out.txt", "sha256": digest, "size": 6})
    headers = sign_streamed_request(drone.signer, method="POST", path="/v1/worker/blob",
                                    query=query, body_sha256=digest)
    raw = RawHttp(shared_relay.url)
    try:
        raw.send_head(f"/v1/worker/blob?{query}", headers, length=6)
        status, _headers, body = raw.read_answer()
    finally:
        raw.close()
    assert (status, json.loads(body)) == (200, {"sha256": digest, "size": 6})
    assert upload_leftovers(shared_relay.data_dir) == 0


# ----- the outcome -----


def test_the_same_outcome_twice_is_acknowledged(finished: tuple[DroneClient, str]) -> None:
    drone, task = finished
    assert drone.finish(task, stdout_size=6).json() == {"ok": True, "state": "succeeded"}


def test_another_outcome_after_finish_is_refused_and_the_first_stays(
    shared_pilot: PilotSession, finished: tuple[DroneClient, str]
) -> None:
    drone, task = finished
    answer = drone.finish(task, "failed", exit_code=2, stdout_size=6)
    assert _error(answer) == (409, "task_finished")
    assert answer.json()["state"] == "succeeded"
    shown = shared_pilot.get(f"/v1/tasks/{task}").json()
    assert (shown["state"], shown["exit_code"]) == ("succeeded", 0)


def test_another_exit_code_is_another_outcome(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    task = _running(shared_pilot, drone)
    assert drone.finish(task, "failed", exit_code=1).status_code == 200
    assert _error(drone.finish(task, "failed", exit_code=7)) == (409, "task_finished")
    assert shared_pilot.get(f"/v1/tasks/{task}").json()["exit_code"] == 1


def test_poll_reports_do_not_reopen_a_finished_task(
    shared_pilot: PilotSession, finished: tuple[DroneClient, str]
) -> None:
    """``started``, ``running`` and ``rejected`` move only active (or lost) tasks."""
    drone, task = finished
    drone.poll(started=[{"id": task}], running=[task],
               rejected=[{"id": task, "reason": "late"}])
    shown = shared_pilot.get(f"/v1/tasks/{task}").json()
    assert (shown["state"], shown["exit_code"], shown["error"]) == ("succeeded", 0, None)
    assert _error(drone.log(task, "stdout", 6, b"x")) == (409, "task_finished")


def test_a_drone_cannot_finish_another_drone_s_task(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    owner, intruder = new_drone(), new_drone()
    task = _running(shared_pilot, owner)
    foreign = intruder.finish(task, "failed", exit_code=9)
    missing = intruder.finish("t-aaaaaaaaaa", "failed", exit_code=9)
    assert (foreign.status_code, foreign.json()) == (missing.status_code, missing.json())
    assert foreign.status_code == 404
    assert shared_pilot.get(f"/v1/tasks/{task}").json()["state"] == "running"


def test_a_task_cancelled_before_it_was_handed_out_is_unknown_to_its_drone(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    """Targeted at the drone by name, cancelled while queued: the drone never had it."""
    drone = new_drone()
    task = shared_pilot.submit("run", drone=drone.name)["id"]
    shared_pilot.post(f"/v1/tasks/{task}/cancel", json={})
    assert shared_pilot.get(f"/v1/tasks/{task}").json()["state"] == "cancelled"
    missing = drone.finish("t-aaaaaaaaaa")
    for answer in (drone.finish(task), drone.finish(task, "cancelled", exit_code=None)):
        assert (answer.status_code, answer.json()) == (missing.status_code, missing.json())
    assert drone.log(task, "stdout", 0, b"x").status_code == 404
    assert drone.message(task, 0, "x").status_code == 404
    assert drone.blob(b"x", task=task, path="a").status_code == 404
    shown = shared_pilot.get(f"/v1/tasks/{task}").json()
    assert (shown["state"], shown["stdout_size"]) == ("cancelled", 0)


def test_a_cancelled_task_takes_no_other_outcome_or_output(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    task = _running(shared_pilot, drone)
    shared_pilot.post(f"/v1/tasks/{task}/cancel", json={})
    assert drone.finish(task, "cancelled", exit_code=None, signal=15).status_code == 200
    assert _error(drone.finish(task, "succeeded")) == (409, "task_finished")
    assert _error(drone.log(task, "stdout", 0, b"x")) == (409, "task_finished")
    assert shared_pilot.get(f"/v1/tasks/{task}").json()["state"] == "cancelled"


def test_a_lost_task_takes_its_drone_s_late_output_and_outcome(fast_relay: RelayProcess) -> None:
    """``lost`` is the relay's guess; the drone's report replaces it (DESIGN.md)."""
    pilot = fast_relay.pilot("ops")
    drone = fast_relay.drone("late")
    task = _running(pilot, drone, lost_after=0.5)
    show = lambda: pilot.get(f"/v1/tasks/{task}").json()  # noqa: E731
    wait_until(lambda: show()["state"] == "lost", timeout=6, message="lost")
    assert drone.log(task, "stdout", 0, b"still here\n").status_code == 200
    assert drone.message(task, 0, "back").status_code == 200
    assert drone.blob(b"late result", task=task, path="r.txt").status_code == 200
    assert drone.finish(task, stdout_size=11).json() == {"ok": True, "state": "succeeded"}
    assert show()["state"] == "succeeded"
    assert _error(drone.log(task, "stdout", 11, b"more")) == (409, "task_finished")


@pytest.fixture
def fast_relay(tmp_path: Path) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.1}) as process:
        yield process


# ----- fetches -----


def test_a_failed_fetch_takes_no_file(
    shared_relay: RelayProcess, shared_pilot: PilotSession,
    new_drone: Callable[..., DroneClient],
) -> None:
    drone = new_drone()
    fetch = shared_pilot.post(f"/v1/workers/{drone.name}/fetch", json={"path": "/x"}).json()
    drone.poll()
    drone.poll(fetch_errors=[{"id": fetch["id"], "error": "outside fetch roots"}])
    answer = drone.blob(b"changed my mind", fetch=fetch["id"])
    assert _error(answer) == (409, "fetch_closed")
    shown = shared_pilot.get(f"/v1/fetches/{fetch['id']}").json()
    assert (shown["state"], shown["error"]) == ("failed", "outside fetch roots")
    digest = hashlib.sha256(b"changed my mind").hexdigest()
    assert not blob_stored(shared_relay.data_dir, digest)


def test_a_served_fetch_acknowledges_a_resend_and_refuses_other_content(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    fetch = shared_pilot.post(f"/v1/workers/{drone.name}/fetch", json={"path": "/x"}).json()
    drone.poll()
    assert drone.blob(b"first", fetch=fetch["id"]).status_code == 200
    assert drone.blob(b"first", fetch=fetch["id"]).status_code == 200
    assert _error(drone.blob(b"second", fetch=fetch["id"])) == (409, "conflict")
    assert shared_pilot.get(f"/v1/fetches/{fetch['id']}/content").content == b"first"


def test_output_for_another_drone_s_or_no_task_gets_one_answer(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    """The task lookup and the quota check are one database call now (quota.admit_append):
    a task of another drone, an unknown id and a malformed one still get the same 404, and
    nothing is stored for the owner's task."""
    owner, intruder = new_drone(), new_drone()
    task = _running(shared_pilot, owner)
    answers = [intruder.log(name, "stdout", 0, b"x") for name in (task, "t-aaaaaaaaaa", "nope")]
    assert len({(a.status_code, a.text) for a in answers}) == 1, [a.text for a in answers]
    assert answers[0].status_code == 404
    assert shared_pilot.get(f"/v1/tasks/{task}").json()["stdout_size"] == 0
