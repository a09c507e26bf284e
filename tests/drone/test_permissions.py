"""The drone's data is private: folders 0700, files 0600, whatever the umask; the task's own
files keep the task's umask; a data dir found looser is tightened at start and said so."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dragoon.drone.state import DataDir

from tests.drone.conftest import DroneProcess, Fleet
from tests.support.relay import wait_until


@pytest.fixture
def fleet(shared_fleet: Fleet) -> Fleet:
    """These tests never crash the relay: they share one per module (see conftest)."""
    return shared_fleet


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    """The umask a child started inside inherits (the test process is single-threaded here)."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def start_with_umask(drone: DroneProcess, value: int) -> None:
    with umask(value):
        drone.start()


def test_a_tasks_folders_are_0700_and_files_0600_even_under_umask_0(fleet: Fleet):
    drone = fleet.drone("d1", start=False)
    # umask 0 would leave every mode the drone does not set itself open to the world.
    start_with_umask(drone, 0)
    task_id = fleet.submit(
        "umask; touch mine; mkdir sub; echo note >> \"$DRAGOON_INBOX\"; "
        "while [ ! -e release ]; do sleep 0.05; done", drone="d1")
    wait_until(lambda: fleet.output(task_id) == b"0000\n", timeout=20,
               message="the task runs and reports its umask")
    data = drone.data_dir
    task_dir, work_dir = data / "tasks" / task_id, data / "work" / task_id
    wait_until(lambda: (task_dir / "inbox.json").exists(), message="inbox read")
    for folder in (data, data / "tasks", data / "work", task_dir, work_dir):
        assert mode(folder) == 0o700, folder
    # Records are replaced by rename, so they always exist; their temp files come and go.
    files = sorted(p for p in task_dir.iterdir() if not p.name.endswith(".tmp") and p.is_file())
    names = {p.name for p in files}
    assert {"stdout", "stderr", "inbox", "wrapper.log", "task.json", "launch.json",
            "proc.json", "inbox.json"} <= names
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    # Inside its own folder, the task's files follow the task's umask (here 0), not the drone's.
    assert mode(work_dir / "mine") == 0o666
    assert mode(work_dir / "sub") == 0o777
    (work_dir / "release").touch()
    assert fleet.wait_state(task_id)["state"] == "succeeded"
    assert mode(work_dir) == 0o700  # kept for the user and for fetch, still private


def test_a_data_dir_found_open_to_others_is_tightened_at_start_and_said_so(fleet: Fleet):
    drone = fleet.drone("d1", start=False)
    data = DataDir(drone.data_dir)
    data.create()
    old = data.work / "t-from-an-older-drone"
    old.mkdir()
    (old / "result.txt").write_text("kept")
    for folder in (data.root, data.tasks, data.work, old):
        os.chmod(folder, 0o755)  # noqa: S103 - the loose dir under test
    drone.start()
    # The last of the start's notices (the old task folder's) means every folder was seen to;
    # the first (the root's) can be in the log while the others are still being tightened.
    wait_until(lambda: "t-from-an-older-drone" in drone.log_text(), timeout=20,
               message="the drone says what it tightened")
    assert mode(data.root) == mode(data.tasks) == mode(data.work) == 0o700
    assert mode(old) == 0o700
    assert (old / "result.txt").read_text() == "kept"
    text = drone.log_text()
    assert f"{data.root} was mode 0755" in text
    assert "t-from-an-older-drone" in text
    # The drone works on: a task runs in a fresh private folder.
    task_id = fleet.submit("echo ok", drone="d1")
    assert fleet.wait_state(task_id)["state"] == "succeeded"
    assert mode(data.work_dir(task_id)) == 0o700


def test_private_folders_are_exact_whatever_the_umask(tmp_path: Path):
    data = DataDir(tmp_path / "drone")
    for value in (0o000, 0o022, 0o077, 0o277):
        with umask(value):
            data.create()
            task_id = f"t{value}"
            assert mode(data.make_task_dir(task_id)) == 0o700
            assert mode(data.make_work_dir(task_id)) == 0o700
        assert mode(data.root) == 0o700
