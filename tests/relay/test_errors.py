"""Bad input answers 400/413/422/429 with ``{"error","detail"}``, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from dragoon.shared.sealed_message import seal_message
from dragoon.shared.spec import SpecError, parse_spec

from tests.support.relay import DroneClient, PilotSession, RelayProcess


def _is_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) >= {"error", "detail"} and body["error"] == code


def test_malformed_json_is_bad_json(shared_pilot: PilotSession) -> None:
    answer = shared_pilot.post("/v1/tasks", content=b'{"spec": ',
                               headers={"content-type": "application/json"})
    _is_error(answer, 400, "bad_json")


# The sealed fields (command, env, cwd, artifacts) are judged where they are read: by the
# pilot's door before sealing and by the drone after opening (the relay never sees them).
@pytest.mark.parametrize("body", [
    {"spec": {"command": "true", "timeout": "soon"}, "drone": "x"},
    {"spec": {"command": "true", "grace": "long"}, "drone": "x"},
    {"spec": {"command": "true", "surprise": 1}, "drone": "x"},
    {"spec": {"command": "true"}},
    {"spec": {"command": "true"}, "drone": "x", "labels": ["a"]},
    [],
    "text",
    None,
])
def test_wrong_types_on_submit_are_invalid(shared_pilot: PilotSession, body: Any) -> None:
    answer = shared_pilot.post("/v1/tasks", json=body) if body is not None else shared_pilot.post(
        "/v1/tasks", content=b"null", headers={"content-type": "application/json"})
    _is_error(answer, 422, "invalid")


@pytest.mark.parametrize("spec", [
    {"command": "true", "timeout": 0},
    {"command": "true", "grace": 3601},
    {"command": "true", "surprise": 1},
    {"command": "true", "name": "two\nlines"},
])
def test_a_bad_spec_is_invalid_with_the_shared_reason_as_its_detail(
    shared_pilot: PilotSession, spec: dict[str, Any]
) -> None:
    """The 422's detail is word for word what the CLI, the dialog and the drone say, for the
    clear fields the relay reads; the sealed ones are the pilot's door's and the drone's
    (tests/cli, tests/drone), as the relay never sees them."""
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    answer = shared_pilot.post("/v1/tasks", json={"spec": spec, "drone": "x"})
    _is_error(answer, 422, "invalid")
    assert answer.json()["detail"] == str(caught.value)


@pytest.mark.parametrize("field", ["command", "env", "cwd", "artifacts"])
def test_a_sealed_field_sent_in_clear_is_refused(shared_pilot: PilotSession, field: str) -> None:
    """A client that would show the relay the command (an old one, or a broken one) is
    refused before anything is stored: those fields travel only in the sealed payload."""
    value: Any = {"command": "id", "env": {}, "cwd": "/tmp", "artifacts": []}[field]
    answer = shared_pilot.post("/v1/tasks", json={"spec": {field: value}, "drone": "x",
                                                  "payload": "AAAA", "order": None})
    _is_error(answer, 422, "invalid")
    assert f"sealed field '{field}' is not sent in clear" in answer.json()["detail"]


def test_bad_drone_names_and_labels_are_invalid_with_the_shared_reason(
    shared_pilot: PilotSession
) -> None:
    spec = {"command": "true"}
    for body, reason in (
        ({"spec": spec, "drone": "gpu 1"}, "drone: 'gpu 1' is not a name"),
        ({"spec": spec, "labels": ["gpu", "a 100"]}, "labels: 'a 100' is not a label"),
    ):
        answer = shared_pilot.post("/v1/tasks", json=body)
        _is_error(answer, 422, "invalid")
        assert answer.json()["detail"].startswith(reason), answer.text
    minted = shared_pilot.post("/v1/workers", json={"name": "-bad", "labels": []})
    _is_error(minted, 422, "invalid")
    assert minted.json()["detail"].startswith("drone: '-bad' is not a name")


@pytest.mark.parametrize(("path", "params"), [
    ("/v1/tasks", {"limit": "many"}),
    ("/v1/tasks", {"limit": 0}),
    ("/v1/tasks", {"state": "sleeping"}),
    ("/v1/messages", {"after": "x"}),
    ("/v1/audit", {"before": "x"}),
])
def test_wrong_query_types_are_invalid(
    shared_pilot: PilotSession, path: str, params: dict[str, Any]
) -> None:
    _is_error(shared_pilot.get(path, params=params), 422, "invalid")


def test_drone_bad_poll_and_log_parameters_are_invalid(
    new_drone: Callable[..., DroneClient],
) -> None:
    drone = new_drone()
    _is_error(drone.post("/v1/worker/poll", json={"running": "t-1"}), 422, "invalid")
    _is_error(drone.post("/v1/worker/log", params={"task": "t-x", "stream": "stdin",
                                                   "offset": 0}, content=b"x"), 422, "invalid")
    _is_error(drone.post("/v1/worker/log", params={"task": "../../etc", "stream": "stdout",
                                                   "offset": 0}, content=b"x"), 404, "not_found")
    _is_error(drone.post("/v1/worker/finish", json={"task": "t-x", "state": "great"}), 422,
              "invalid")


def test_unknown_task_is_not_found(shared_pilot: PilotSession) -> None:
    _is_error(shared_pilot.get("/v1/tasks/t-aaaaaaaaaa"), 404, "not_found")
    _is_error(shared_pilot.post("/v1/tasks/t-aaaaaaaaaa/cancel"), 404, "not_found")


def test_submit_to_unknown_drone_is_not_found(shared_pilot: PilotSession) -> None:
    answer = shared_pilot.post("/v1/tasks", json={"spec": {"command": "x"}, "drone": "ghost"})
    _is_error(answer, 404, "not_found")


def test_oversized_body_is_too_large(shared_pilot: PilotSession) -> None:
    answer = shared_pilot.post("/v1/tasks", json={"spec": {}, "payload": "A" * (2 << 20),
                                                  "drone": "x"})
    _is_error(answer, 413, "too_large")


def test_oversized_log_chunk_is_too_large(new_drone: Callable[..., DroneClient]) -> None:
    answer = new_drone().log("t-aaaaaaaaaa", "stdout", 0, b"x" * (257 * 1024))
    _is_error(answer, 413, "too_large")


def test_bad_json_on_open_routes_is_bad_json(shared_relay: RelayProcess) -> None:
    for path in ("/v1/auth/challenge", "/v1/auth/login", "/v1/worker/init"):
        answer = httpx.post(f"{shared_relay.url}{path}", content=b"{{",
                            headers={"content-type": "application/json"})
        _is_error(answer, 400, "bad_json")
        _is_error(httpx.post(f"{shared_relay.url}{path}", json={"fingerprint": 1}), 422, "invalid")


def test_queued_tasks_per_pilot_are_capped(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay", config={"queued_per_pilot": 2}) as relay:
        pilot = relay.pilot()
        relay.drone("busy", pilot=pilot)
        pilot.submit("a", drone="busy")
        pilot.submit("b", drone="busy")
        answer = pilot.post("/v1/tasks", json={"spec": {"command": "c"}, "drone": "busy"})
        _is_error(answer, 429, "quota_exceeded")


ROUTES = [
    ("POST", "/v1/workers"), ("POST", "/v1/workers/x/drain"), ("POST", "/v1/workers/x/fetch"),
    ("POST", "/v1/tasks"), ("POST", "/v1/tasks/t-aaaaaaaaaa/cancel"), ("POST", "/v1/messages/ack"),
]
GARBAGE = [b"", b"{", b"[1,2]", b'{"name": {"a": 1}}', b"\xff\xfe", b'{"ids": ["x"]}',
           b'{"drain": "yes"}', b'{"path": 7}', b'{"grace": -1}']


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_garbage_bodies_never_cause_a_500(
    shared_pilot: PilotSession, method: str, path: str
) -> None:
    for body in GARBAGE:
        answer = shared_pilot.request(method, path, content=body,
                               headers={"content-type": "application/json"})
        assert answer.status_code < 500, (body, answer.text)
        if answer.status_code >= 400:
            assert "error" in answer.json()


HUGE = 10**30


def test_numbers_beyond_64_bits_are_invalid_not_a_crash(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    task = shared_pilot.submit("true", drone=drone.name)["id"]
    drone.poll()
    answers = [
        shared_pilot.get("/v1/audit", params={"before": HUGE}),
        shared_pilot.get("/v1/messages", params={"after": HUGE}),
        shared_pilot.post("/v1/messages/ack", json={"ids": [HUGE]}),
        shared_pilot.get(f"/v1/tasks/{task}/log", params={"offset": HUGE}),
        shared_pilot.post("/v1/tasks", json={"spec": {"command": "x", "timeout": HUGE},
                                             "drone": drone.name}),
        drone.post("/v1/worker/message", json={"task": task, "index": HUGE, "sealed":
                   seal_message(drone.task_keys[task], task_id=task, index=0, text="x")}),
        drone.finish(task, exit_code=HUGE),
        drone.log(task, "stdout", HUGE, b"x"),
        drone.poll(started=[{"id": task, "pid": HUGE}]),
    ]
    for answer in answers:
        _is_error(answer, 422, "invalid")
    assert shared_pilot.get("/healthz").status_code == 200


def test_text_that_cannot_reach_bash_or_is_not_unicode_is_invalid(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    drone = new_drone()
    task = shared_pilot.submit("true", drone=drone.name)["id"]
    drone.poll()
    _is_error(shared_pilot.post("/v1/tasks", json={
        "spec": {"command": "x", "name": "a\x00b"}, "drone": drone.name}), 422, "invalid")
    lone = b'{"task": "%s", "index": 1, "sealed": "\\udc80"}' % task.encode()
    _is_error(drone.post("/v1/worker/message", content=lone,
                         headers={"content-type": "application/json"}), 422, "invalid")
    _is_error(shared_pilot.post("/v1/tasks", content=b'{"spec": {"command": "\xff"}}',
                                headers={"content-type": "application/json"}), 400, "bad_json")
