"""End to end: slots, labels, joining, and the drone's settings as a ceiling."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from dragoon.shared.enrollment import JoinToken

from tests.drone.conftest import DroneProcess, Fleet


@pytest.fixture
def fleet(shared_fleet: Fleet) -> Fleet:
    """These tests never crash the relay: they share one per module (see conftest)."""
    return shared_fleet


def test_a_one_slot_drone_never_runs_two_tasks_at_once(fleet: Fleet, tmp_path: Path):
    fleet.drone("d1", slots=1)
    spans = tmp_path / "spans"
    command = f"echo start $(date +%s.%N) >> {spans}; sleep 0.5; echo end $(date +%s.%N) >> {spans}"
    ids = [fleet.submit(command, drone="d1") for _ in range(3)]
    for task_id in ids:
        assert fleet.wait_state(task_id)["state"] == "succeeded"
    events = [line.split() for line in spans.read_text().splitlines()]
    assert [kind for kind, _ in events] == ["start", "end"] * 3  # strictly one after another


def test_a_two_slot_drone_runs_two_at_once(fleet: Fleet, tmp_path: Path):
    fleet.drone("d1", slots=2)
    gate = tmp_path / "gate"
    # Each task waits until both have started: only possible with two slots.
    command = f"echo x >> {gate}; while [ $(wc -l < {gate}) -lt 2 ]; do sleep 0.05; done"
    ids = [fleet.submit(command, drone="d1", timeout=20) for _ in range(2)]
    for task_id in ids:
        assert fleet.wait_state(task_id)["state"] == "succeeded"


def test_a_labels_targeted_task_goes_to_a_matching_drone(fleet: Fleet):
    fleet.drone("cpu1", labels=("cpu",))
    fleet.drone("gpu1", labels=("gpu", "a100"))
    ids = [str(fleet.pilot.submit("hostname", labels=["gpu"], grace=1)["id"]) for _ in range(2)]
    for task_id in ids:
        task = fleet.wait_state(task_id)
        assert task["state"] == "succeeded" and task["drone"] == fleet.name("gpu1")


def test_the_drones_max_timeout_caps_what_the_relay_asks(fleet: Fleet):
    fleet.drone("d1", max_timeout=1.0)
    task = fleet.wait_state(fleet.submit("sleep 60", drone="d1", timeout=3600))
    assert task["state"] == "timed_out"


def test_join_makes_a_private_key_and_pins_the_relay_key(fleet: Fleet):
    drone = fleet.drone("d1", start=False)
    key = drone.data_dir / "drone_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (drone.data_dir / "relay_key.pub").read_text().startswith("ssh-ed25519 ")
    settings = (drone.data_dir / "drone.toml").read_text()
    assert f'name = "{fleet.name("d1")}"' in settings and "slots = 1" in settings


def test_join_refuses_a_relay_key_that_does_not_match_the_token(fleet: Fleet, tmp_path: Path):
    real = JoinToken.decode(fleet.relay.enroll(fleet.name("d9")))
    forged = JoinToken(real.relay, real.drone, real.secret,
                       "SHA256:" + "A" * 43).encode()
    drone = DroneProcess(tmp_path / "drone-d9")
    result = drone.join(forged, check=False)
    assert result.returncode == 1
    assert "refusing the relay's task key" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (drone.data_dir / "drone.toml").exists()
    assert not (drone.data_dir / "relay_key.pub").exists()


def test_join_with_a_bad_token_says_so_in_one_line(tmp_path: Path):
    result = DroneProcess(tmp_path / "d").join("not-a-token", check=False)
    assert result.returncode == 1 and "not a dragoon join token" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
