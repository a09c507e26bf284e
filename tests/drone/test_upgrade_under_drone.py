"""``pip install -U dragoon`` under a running drone: it says so, and keeps running tasks.

The drone runs from a copy of the package in a site dir of its own (put first
on its ``PYTHONPATH``), so the test can do to it what pip does to an installed
package: remove the task wrapper's file, then install a newer version's
metadata. The drone must start every task from the wrapper it captured at its
start, note the change in each task and say it once in its log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import psutil

from tests.drone.conftest import DroneProcess, Fleet
from tests.support.relay import REPO, wait_until

VERSION = "0.1.0"  # pyproject.toml's: what the venv's metadata says the drone runs


def site_copy(root: Path) -> Path:
    """The parts a drone imports, laid out as an installed ``dragoon`` package."""
    site = root / "site"
    shutil.copytree(REPO / "dragoon", site / "dragoon",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("shared", "drone"):
        shutil.copytree(REPO / part, site / "dragoon" / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return site


def start_from(drone: DroneProcess, site: Path, cwd: Path) -> None:
    log = open(drone.log_path, "ab")  # noqa: SIM115 - the child owns it
    try:
        drone.process = subprocess.Popen(
            [sys.executable, "-m", "dragoon", "drone", "run", "--data", str(drone.data_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(site)})
    finally:
        log.close()


def run_task(fleet: Fleet) -> dict[str, object]:
    task = fleet.wait_state(fleet.submit("echo still-working", drone="d1"), timeout=60)
    assert fleet.output(str(task["id"])) == b"still-working\n"
    return task


def test_a_drone_upgraded_under_it_says_so_and_keeps_running_tasks(fleet: Fleet,
                                                                   tmp_path: Path) -> None:
    site = site_copy(tmp_path)
    drone = fleet.drone("d1", start=False)
    (tmp_path / "elsewhere").mkdir()
    start_from(drone, site, tmp_path / "elsewhere")
    wait_until(lambda: "starting" in drone.log_text(), timeout=30, message="drone started")

    first = run_task(fleet)
    assert first["state"] == "succeeded" and first["notes"] == []
    # Tasks start from the drone's own copy of the wrapper it started with.
    captured = drone.data_dir / "wrapper.py"
    assert captured.read_bytes() == (site / "dragoon" / "drone" / "wrapper.py").read_bytes()
    assert captured.stat().st_mode & 0o777 == 0o600

    # pip removes the old version's files first ...
    installed = site / "dragoon" / "drone" / "wrapper.py"
    installed.rename(installed.with_name("wrapper.py.removed"))
    gone = run_task(fleet)
    assert gone["state"] == "succeeded", gone
    assert gone["notes"] == [f"dragoon's files changed under this drone ({installed} is gone): "
                             "restart it"]

    # ... and then puts the new version's in place.
    dist = site / "dragoon-9.9.9.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dragoon\nVersion: 9.9.9\n")
    upgraded = f"dragoon was upgraded under this drone ({VERSION} → 9.9.9): restart it"
    for _ in range(2):
        task = run_task(fleet)
        assert task["state"] == "succeeded", task
        assert task["notes"] == [upgraded]
    log = drone.log_text()
    assert log.count(upgraded) == 1, log  # said once, not once per task
    assert log.count("is gone): restart it") == 1, log
    assert "the task wrapper did not start" not in log


def launcher_of(drone: DroneProcess) -> psutil.Process:
    """The drone's task launcher (drone/launcher.py): its child running ``--launcher``."""
    assert drone.process is not None
    return wait_until(lambda: next(
        (p for p in psutil.Process(drone.process.pid).children()
         if "--launcher" in p.cmdline()), None), message="the drone's launcher")


def test_a_drone_whose_python_went_with_the_upgrade_fails_tasks_saying_why(
        fleet: Fleet, tmp_path: Path) -> None:
    """The venv rebuilt under the drone: once its launcher, the one Python process it had
    already started, is gone, even its captured wrapper has no Python to run it."""
    site = site_copy(tmp_path)
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.symlink_to(Path(sys.executable).resolve())
    libraries = sysconfig.get_paths()["purelib"]  # httpx, psutil …: not the package itself
    drone = fleet.drone("d1", start=False)
    log = open(drone.log_path, "ab")  # noqa: SIM115 - the child owns it
    try:
        drone.process = subprocess.Popen(
            [str(python), "-m", "dragoon", "drone", "run", "--data", str(drone.data_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1",
                 "PYTHONPATH": os.pathsep.join([str(site), libraries])})
    finally:
        log.close()
    wait_until(lambda: "starting" in drone.log_text(), timeout=30, message="drone started")
    assert run_task(fleet)["state"] == "succeeded"

    python.unlink()  # the old venv is gone ...
    # ... while the launcher started before lives, tasks still start from it ...
    assert run_task(fleet)["state"] == "succeeded"
    launcher = launcher_of(drone)
    launcher.kill()  # ... and once it is gone, nothing can start a wrapper
    wait_until(lambda: not launcher.is_running() or launcher.status() == psutil.STATUS_ZOMBIE,
               message="the launcher dead")
    dist = site / "dragoon-9.9.9.dist-info"  # ... and a newer dragoon is installed
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dragoon\nVersion: 9.9.9\n")
    task = fleet.wait_state(fleet.submit("echo never", drone="d1"), timeout=60)
    upgraded = f"dragoon was upgraded under this drone ({VERSION} → 9.9.9): restart it"
    assert task["state"] == "failed", task
    assert task["error"] == upgraded
    assert fleet.output(str(task["id"])) == b""
    assert upgraded in drone.log_text()
