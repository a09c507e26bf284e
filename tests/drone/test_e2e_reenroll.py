"""Exactly once across re-enrollment, with a real relay, real drones and the pilot's CLI.

A task's command appends one line to a file in a shared temp dir each time it
starts, so "ran once" is counted on disk, not inferred from states. Drone A
holds the name; the pilot enrolls the name again, first without ``--replace``
(refused, A untouched), then with it (drone B joins). A's task must end
``lost`` (never handed to B), A must stop with its distinct exit status and
one log line, its task's processes must be killed, and B must run new work.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psutil
from dragoon.shared.trust import read_authorized_pilots, write_authorized_pilots

from tests.cli.conftest import Pilot, make_pilot
from tests.drone.conftest import DroneProcess, Fleet
from tests.drone.proxy import TamperingProxy
from tests.support.relay import REPO, wait_until

EXIT_REPLACED = 78  # drone/daemon.py's EXIT_REPLACED, pinned here as scripts see it
REPLACED_LINE = re.compile(
    r"replaced by a newer enrollment of (\S+) at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ); stopping")


def pilot_cli(fleet: Fleet) -> Pilot:
    pilot = make_pilot(fleet.relay, fleet.root / "pilots", "penny")
    pilot.login()
    return pilot


def long_task(fleet: Fleet, shared: Path, tag: str, drone: str) -> str:
    """A task that records each start (a line, and its shell's pid) and then runs for long."""
    return fleet.submit(f"echo {tag} >> {shared}/runs; echo $$ > {shared}/{tag}.pid; sleep 600",
                        drone=drone, grace=1)


def runs(shared: Path) -> list[str]:
    path = shared / "runs"
    return path.read_text().split() if path.exists() else []


def refused_enroll(pilot: Pilot, name: str) -> None:
    done = pilot.cli("enroll", name)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""  # no token to paste by mistake
    assert re.search(rf"drone {re.escape(name)} exists \((online|offline|pending)\); "
                     r"use --replace", done.stderr), done.stderr


def join_b(fleet: Fleet, token: str) -> DroneProcess:
    drone_b = DroneProcess(fleet.root / "drone-b")
    drone_b.join(token)
    # Its owner lets the fleet's pilot (who submits the tasks) give it orders, as
    # `dragoon drone authorize` does; the token authorized only the enrolling pilot.
    pilots = drone_b.data_dir / "authorized_pilots"
    write_authorized_pilots(pilots, [*read_authorized_pilots(pilots),
                                     fleet.pilot.signer.public_key])
    drone_b.configure(poll_wait=5.0)
    fleet.drones.append(drone_b)
    drone_b.start()
    return drone_b


def assert_stopped_as_replaced(drone: DroneProcess, name: str) -> None:
    assert drone.process is not None
    wait_until(lambda: drone.process is not None and drone.process.poll() is not None,
               timeout=40, message="the replaced drone stops")
    assert drone.process.returncode == EXIT_REPLACED, drone.log_text()[-3000:]
    lines = [m for m in REPLACED_LINE.finditer(drone.log_text())]
    assert len(lines) == 1, drone.log_text()[-3000:]
    assert lines[0].group(1) == name


def process_gone(pid_file: Path) -> bool:
    pid = int(pid_file.read_text())
    if not psutil.pid_exists(pid):
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def b_runs_new_work(fleet: Fleet, shared: Path, drone_b: DroneProcess) -> None:
    """B takes work for the name: proof that it polled after the replacement, too."""
    task_id = fleet.submit(f"echo new >> {shared}/runs", drone="gpu-1")
    task = fleet.wait_state(task_id, timeout=40)
    assert task["state"] == "succeeded", task
    assert task_id in drone_b.log_text()


def test_replacing_an_online_drone_ends_its_task_as_lost_and_stops_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    pilot = pilot_cli(fleet)
    drone_a = fleet.drone("gpu-1")
    task_id = long_task(fleet, shared, "first", "gpu-1")
    fleet.wait_state(task_id, "running")
    wait_until(lambda: (shared / "first.pid").exists(), message="the task started")

    refused_enroll(pilot, "gpu-1")
    assert fleet.task(task_id)["state"] == "running"  # the refusal touched nothing
    assert drone_a.process is not None and drone_a.process.poll() is None

    drone_b = join_b(fleet, pilot.ok("enroll", "gpu-1", "--replace").strip())
    task = fleet.wait_state(task_id, "lost")
    assert "drone replaced" in task["error"]
    assert_stopped_as_replaced(drone_a, "gpu-1")
    wait_until(lambda: process_gone(shared / "first.pid"), timeout=30,
               message="the replaced drone's task is killed")
    b_runs_new_work(fleet, shared, drone_b)
    assert fleet.task(task_id)["state"] == "lost"
    assert task_id not in drone_b.log_text()
    assert runs(shared) == ["first", "new"]  # the long task ran exactly once


def test_replacing_an_offline_drone_stops_it_when_it_comes_back(
    fleet: Fleet, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    pilot = pilot_cli(fleet)
    drone_a = fleet.drone("gpu-1")
    task_id = long_task(fleet, shared, "first", "gpu-1")
    fleet.wait_state(task_id, "running")
    wait_until(lambda: (shared / "first.pid").exists(), message="the task started")
    assert drone_a.stop() == 0  # a plain stop: the task runs on in its own session
    assert not process_gone(shared / "first.pid")

    refused_enroll(pilot, "gpu-1")
    drone_b = join_b(fleet, pilot.ok("enroll", "gpu-1", "--replace").strip())
    assert "drone replaced" in fleet.wait_state(task_id, "lost")["error"]
    b_runs_new_work(fleet, shared, drone_b)

    drone_a.start()  # back from the dead: it re-adopts its task, then learns it was replaced
    assert_stopped_as_replaced(drone_a, "gpu-1")
    wait_until(lambda: process_gone(shared / "first.pid"), timeout=30,
               message="the re-adopted task is killed")
    assert fleet.task(task_id)["state"] == "lost"
    assert runs(shared) == ["first", "new"]


def test_replacing_while_the_task_is_only_dispatched_never_runs_it_again(
    fleet: Fleet, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    pilot = pilot_cli(fleet)
    proxy = TamperingProxy(fleet.relay.url)
    try:
        # Every poll answer to A loses its tasks on the way: the relay has dispatched the
        # task, A never got it.
        handed: list[dict[str, object]] = []

        def drop_tasks(answer: dict[str, object]) -> dict[str, object]:
            handed.extend(answer.get("tasks") or [])  # type: ignore[arg-type]
            return {**answer, "tasks": []}

        proxy.answer_hook = drop_tasks
        drone_a = fleet.drone("gpu-1", start=False)
        drone_a.configure(relay=proxy.url)
        drone_a.start()
        task_id = long_task(fleet, shared, "first", "gpu-1")
        fleet.wait_state(task_id, "dispatched")
        wait_until(lambda: handed, message="the relay handed the task out")

        refused_enroll(pilot, "gpu-1")
        assert fleet.task(task_id)["state"] == "dispatched"
        drone_b = join_b(fleet, pilot.ok("enroll", "gpu-1", "--replace").strip())
        assert "drone replaced" in fleet.wait_state(task_id, "lost")["error"]
        assert_stopped_as_replaced(drone_a, "gpu-1")
        b_runs_new_work(fleet, shared, drone_b)
        assert task_id not in drone_b.log_text()
        assert runs(shared) == ["new"]  # handed out once, never run, never handed to B
    finally:
        proxy.close()


def test_a_token_for_a_name_taken_meanwhile_is_refused_at_join(
    fleet: Fleet, tmp_path: Path
) -> None:
    pilot = pilot_cli(fleet)
    early = pilot.ok("enroll", "gpu-9").strip()  # the name is free when this is minted
    drone_c = join_b(fleet, pilot.ok("enroll", "gpu-9").strip())  # another drone joins first
    wait_until(lambda: any(d["name"] == "gpu-9" and d["state"] == "online"
                           for d in pilot.json("drones")), timeout=30, message="C online")
    done = subprocess.run(
        [sys.executable, "-m", "dragoon", "drone", "join", early, "--data",
         str(tmp_path / "drone-d")], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 1
    assert "name_taken" in done.stderr and "gpu-9" in done.stderr, done.stderr
    assert not (tmp_path / "drone-d" / "drone.toml").exists()
    task_id = fleet.submit("echo still-mine", drone="gpu-9")
    assert fleet.wait_state(task_id, timeout=40)["state"] == "succeeded"
    assert task_id in drone_c.log_text()
    assert drone_c.process is not None and drone_c.process.poll() is None


def test_the_drone_unit_does_not_restart_a_replaced_drone() -> None:
    from dragoon.drone.daemon import EXIT_REPLACED as CODE

    assert CODE == EXIT_REPLACED
    unit = (REPO / "deploy" / "dragoon-drone.service").read_text()
    prevent = re.findall(r"^RestartPreventExitStatus=(.*)$", unit, re.MULTILINE)
    assert prevent and str(CODE) in prevent[0].split()
