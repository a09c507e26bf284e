"""A task signed by a wrong key, for another drone, with a replayed sequence or a tampered spec
is rejected before anything runs, and the relay hears ``bad_task_signature: <reason>``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.drone.state import read_json
from dragoon.shared import e2e, sshsig
from dragoon.shared.canonical import canonical_task
from dragoon.shared.constants import NS_TASK
from dragoon.shared.keys import PrivateKey
from dragoon.shared.signers import KeyFileSigner

from tests.drone.conftest import DroneProcess, Fleet
from tests.drone.proxy import TamperingProxy
from tests.support.sealing import DroneKeys, sealed_fields


@pytest.fixture
def fleet(shared_fleet: Fleet) -> Fleet:
    """These tests never crash the relay: they share one per module (see conftest)."""
    return shared_fleet


@pytest.fixture
def proxied(fleet: Fleet) -> Iterator[tuple[Fleet, DroneProcess, TamperingProxy]]:
    proxy = TamperingProxy(fleet.relay.url)
    drone = fleet.drone("d1", start=False)
    drone.configure(relay=proxy.url)
    drone.start()
    try:
        yield fleet, drone, proxy
    finally:
        drone.stop()
        proxy.close()


def resign(task: dict[str, Any], signer: KeyFileSigner) -> dict[str, Any]:
    message = canonical_task(task_id=task["id"], drone=task["drone"], seq=task["seq"],
                             spec=task["spec"])
    return {**task, "signature": sshsig.encode_b64(signer.sign(NS_TASK, message))}


def relay_signer(fleet: Fleet) -> KeyFileSigner:
    return KeyFileSigner.from_file(fleet.relay.data_dir / "relay_key")


def assert_rejected(fleet: Fleet, drone: DroneProcess, task_id: str, marker: Path,
                    reason: str) -> None:
    task = fleet.wait_state(task_id)
    assert task["state"] == "failed"
    assert task["error"].startswith("bad_task_signature: "), task["error"]
    assert reason in task["error"]
    assert not marker.exists(), "the rejected command ran"
    assert not (drone.data_dir / "tasks" / task_id).exists()


def test_a_task_signed_by_another_key_is_rejected_before_it_runs(proxied, tmp_path):
    fleet, drone, proxy = proxied
    intruder = KeyFileSigner(PrivateKey.generate_ed25519())
    proxy.tamper = lambda task: resign(task, intruder)
    marker = tmp_path / "ran"
    task_id = fleet.submit(f"touch {marker}", drone="d1")
    assert_rejected(fleet, drone, task_id, marker, "pinned relay key")


def test_a_task_for_another_drone_is_rejected_before_it_runs(proxied, tmp_path):
    fleet, drone, proxy = proxied
    signer = relay_signer(fleet)
    proxy.tamper = lambda task: resign({**task, "drone": "d2"}, signer)
    marker = tmp_path / "ran"
    task_id = fleet.submit(f"touch {marker}", drone="d1")
    assert_rejected(fleet, drone, task_id, marker,
                    f"task is for drone 'd2', not '{fleet.name('d1')}'")


def test_a_replayed_sequence_is_rejected_even_across_a_drone_restart(proxied, tmp_path):
    fleet, drone, proxy = proxied
    first = fleet.submit("true", drone="d1")
    assert fleet.wait_state(first)["state"] == "succeeded"
    drone.stop()
    last_seq = json.loads((drone.data_dir / "state.json").read_text())["last_seq"]
    assert last_seq >= 1
    drone.start()  # the last sequence number is kept on disk across the restart
    signer = relay_signer(fleet)
    proxy.tamper = lambda task: resign({**task, "seq": last_seq}, signer)
    marker = tmp_path / "ran"
    task_id = fleet.submit(f"touch {marker}", drone="d1")
    assert_rejected(fleet, drone, task_id, marker, f"sequence {last_seq} is not above {last_seq}")


def test_a_tampered_spec_is_rejected_before_it_runs(proxied, tmp_path):
    fleet, drone, proxy = proxied
    marker = tmp_path / "ran"
    proxy.tamper = lambda task: {**task, "spec": {**task["spec"], "command": f"touch {marker}"}}
    task_id = fleet.submit("true", drone="d1")
    assert_rejected(fleet, drone, task_id, marker, "does not verify")
    assert proxy.tampered >= 1
    state = read_json(drone.data_dir / "state.json")
    assert state is None or task_id not in state["accepted"]


@pytest.mark.parametrize(("change", "reason"), [
    ({"artifacts": ["../secret.txt"]},
     "artifacts: '../secret.txt' holds '..'; patterns stay inside the work dir"),
    ({"timeout": 0}, "timeout: must be more than zero"),
    ({"env": {"1X": "2"}}, "env: '1X' is not a variable name"),
])
def test_a_signed_spec_the_relay_would_refuse_is_rejected_as_bad_spec(proxied, tmp_path, change,
                                                                      reason):
    """A relay holding its key (or a stolen copy) signs what its own door refuses: the drone
    holds the spec to the same shared rule and names the same reason."""
    fleet, drone, proxy = proxied
    marker = tmp_path / "ran"
    signer = relay_signer(fleet)

    key = e2e.new_task_key()

    def sign_a_bad_spec(task: dict[str, Any]) -> dict[str, Any]:
        unhashed = {key: value for key, value in task.items() if key != "spec_sha256"}
        spec = {"command": f"touch {marker}", "grace": 10, **change}
        # An authorized pilot sealed and signed it too (its client does not hold it to the
        # rule): the drone's own spec rule is what must refuse it.
        return resign({**unhashed, **sealed_fields(spec, drone=task["drone"],
                                                   keys=DroneKeys.of(drone.data_dir),
                                                   signer=fleet.pilot.signer, key=key)},
                      signer)

    proxy.tamper = sign_a_bad_spec
    task_id = fleet.submit(f"touch {marker}", drone="d1")
    task = fleet.wait_state(task_id)
    assert task["state"] == "failed"
    # The reason quotes sealed fields: the drone sealed it under the task key for the pilot.
    assert e2e.is_sealed_text(task["error"]) and "secret" not in task["error"]
    error = e2e.open_text(key, task["error"], task_id=task_id, name="error")
    assert error.startswith(f"bad_spec: {reason}"), error
    assert not marker.exists(), "the refused command ran"
    assert not (drone.data_dir / "tasks" / task_id).exists()


def test_a_redelivered_task_id_is_acknowledged_and_never_run_twice(proxied, tmp_path):
    fleet, drone, proxy = proxied
    counter = tmp_path / "runs"
    first = fleet.submit(f"echo run >> {counter}", drone="d1")
    assert fleet.wait_state(first)["state"] == "succeeded"
    proxy.inject = [task for task in proxy.seen if task["id"] == first]
    second = fleet.submit("true", drone="d1")
    assert fleet.wait_state(second)["state"] == "succeeded"
    assert counter.read_text() == "run\n"
    assert f"task {first}: already accepted" in drone.log_text()


def test_an_accept_kept_only_by_its_task_dir_survives_a_kill9_and_never_runs_twice(proxied,
                                                                                    tmp_path):
    """state.json catches up only when a task dir goes (drone/state.py, AdmissionLedger): after
    a kill -9 mid-task, the task's own task.json is what refuses its redelivery."""
    fleet, drone, proxy = proxied
    counter, release = tmp_path / "runs", tmp_path / "go"
    first = fleet.submit(f"echo run >> {counter}; until [ -e {release} ]; do sleep 0.05; done",
                         drone="d1")
    fleet.wait_state(first, "running")
    drone.kill9()
    state = read_json(drone.data_dir / "state.json")
    assert state is None or first not in state["accepted"]
    drone.configure(slots=2)  # the re-adopted task holds one: the redelivery rides on another
    drone.start()
    proxy.inject = [task for task in proxy.seen if task["id"] == first]
    second = fleet.submit("true", drone="d1")
    assert fleet.wait_state(second)["state"] == "succeeded"
    release.touch()
    assert fleet.wait_state(first)["state"] == "succeeded"
    assert counter.read_text() == "run\n"
    assert f"task {first}: already accepted" in drone.log_text()
    proxy.inject = []
