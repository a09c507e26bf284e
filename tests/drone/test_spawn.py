"""The wrapper and process control: detached start, exit status, process-group kill."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import psutil
from dragoon.drone import spawn
from dragoon.drone.state import read_json

from tests.support.relay import wait_until


def launch(task_dir: Path, command: str, *, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> spawn.ProcRecord:
    task_dir.mkdir(parents=True, exist_ok=True)
    _wrapper, record = asyncio.run(spawn.launch(
        task_dir, command=command, cwd=cwd or task_dir, env=env or dict(os.environ)))
    assert record is not None
    return record


def exit_info(task_dir: Path, timeout: float = 10.0) -> dict:
    return wait_until(lambda: read_json(task_dir / "exit.json"), timeout=timeout,
                      message="exit.json")


def test_output_goes_to_spool_files_and_exit_code_is_recorded(tmp_path):
    task = tmp_path / "t"
    launch(task, "echo out; echo err >&2; exit 3")
    info = exit_info(task)
    assert info["exit_code"] == 3 and info["signal"] is None
    assert (task / "stdout").read_bytes() == b"out\n"
    assert (task / "stderr").read_bytes() == b"err\n"


def test_the_task_runs_in_its_own_session_and_group_with_no_stdin(tmp_path):
    task = tmp_path / "t"
    record = launch(task, 'ps -o pgid= -o sid= -p $$; cat; echo "rc=$?"')
    exit_info(task)
    pgid, sid = (task / "stdout").read_text().split()[:2]
    assert int(pgid) == record.pid == int(sid)
    assert os.getpgid(0) != record.pid
    assert "rc=0" in (task / "stdout").read_text()  # cat read /dev/null: immediate EOF


def test_env_and_cwd_reach_the_task(tmp_path):
    task, work = tmp_path / "t", tmp_path / "work"
    work.mkdir()
    launch(task, 'echo "$MY_VAR $PWD"', env={**os.environ, "MY_VAR": "v1"}, cwd=work)
    exit_info(task)
    assert (task / "stdout").read_text() == f"v1 {work}\n"


def test_a_missing_cwd_is_reported_as_a_start_failure(tmp_path):
    task = tmp_path / "t"
    task.mkdir()
    _wrapper, record = asyncio.run(spawn.launch(
        task, command="true", cwd=tmp_path / "nope", env=dict(os.environ)))
    assert record is None
    info = exit_info(task)
    # The wrapper's own failure, not the command's: no exit code (docs/cli.md, "Exit codes").
    assert info["exit_code"] is None and "cannot start" in info["error"]


def test_cwd_problem_names_what_is_wrong_before_anything_is_spawned(tmp_path):
    (tmp_path / "file").write_text("")
    assert spawn.cwd_problem(tmp_path) is None
    assert spawn.cwd_problem(tmp_path / "nope") == "no such directory"
    assert spawn.cwd_problem(tmp_path / "file") == "not a directory"


def test_killing_the_group_leaves_no_grandchild_behind(tmp_path):
    task = tmp_path / "t"
    record = launch(task, "bash -c 'sleep 300 & echo $! > grandchild; wait' & wait")
    grandchild = int(wait_until(lambda: (task / "grandchild").exists()
                              and (task / "grandchild").read_text().strip(), message="grandchild"))
    assert psutil.pid_exists(grandchild)
    spawn.kill_tree(record, signal.SIGTERM)
    info = exit_info(task)
    assert info["signal"] == signal.SIGTERM
    wait_until(lambda: not psutil.pid_exists(grandchild) or
             psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE,
             message="grandchild gone")


def test_sigterm_ignored_then_sigkill_ends_the_task(tmp_path):
    task = tmp_path / "t"
    record = launch(task, "trap 'echo term' TERM; echo ready; while true; do sleep 0.05; done")
    wait_until(lambda: (task / "stdout").read_bytes() == b"ready\n", message="ready")
    spawn.kill_tree(record, signal.SIGTERM)
    wait_until(lambda: b"term" in (task / "stdout").read_bytes(), message="trap ran")
    assert read_json(task / "exit.json") is None  # it shrugged SIGTERM off
    spawn.kill_tree(record, signal.SIGKILL)
    assert exit_info(task)["signal"] == signal.SIGKILL


def test_background_leftovers_are_swept_when_the_task_exits(tmp_path):
    task = tmp_path / "t"
    launch(task, "sleep 300 & echo $! > left; exit 0")
    info = exit_info(task)
    left = int((task / "left").read_text())
    assert info["exit_code"] == 0
    wait_until(lambda: not psutil.pid_exists(left) or
             psutil.Process(left).status() == psutil.STATUS_ZOMBIE, message="leftover gone")


def test_the_task_outlives_the_process_that_launched_it(tmp_path):
    """A drone crash must not touch the task: the wrapper is in its own session."""
    task = tmp_path / "t"
    record = launch(task, "sleep 0.3; echo survived")
    assert os.getsid(record.wrapper_pid) == record.wrapper_pid
    assert os.getsid(record.pid) == record.pid
    info = exit_info(task)
    assert info["exit_code"] == 0 and (task / "stdout").read_text() == "survived\n"


def test_a_recycled_pid_is_not_mistaken_for_the_task(tmp_path):
    task = tmp_path / "t"
    record = launch(task, "sleep 5")
    assert spawn.same_process(record.pid, record.create_time) is not None
    assert record.create_time is not None
    assert spawn.same_process(record.pid, record.create_time - 100) is None
    spawn.kill_tree(record, signal.SIGKILL)
    exit_info(task)


def test_proc_record_round_trips_and_knows_the_boot(tmp_path):
    task = tmp_path / "t"
    record = launch(task, "true")
    stored = spawn.ProcRecord.from_json(json.loads((task / "proc.json").read_text()))
    assert stored == record
    assert not spawn.rebooted_since(record)
    moved = spawn.ProcRecord(**{**record.to_json(), "boot_time": record.boot_time - 3600})
    assert spawn.rebooted_since(moved)


def test_tree_sample_counts_cpu_and_memory_of_the_group(tmp_path):
    """A child of the task's shell holds 60 MB and burns 0.3 s of CPU (process time, so a
    loaded machine only makes it slower), then waits to be killed: every sample that shows
    the CPU is taken while the memory is still held. (A task that ended by itself, as one
    burning for 0.6 s of wall time did, let a late sample see the CPU its shell had reaped
    but none of the memory: its stdin is /dev/null, so sys.stdin.read() never held it.)"""
    task = tmp_path / "t"
    record = launch(task, "python3 -c 'x = bytearray(60_000_000)\nimport signal, time\n"
                          "while time.process_time() < 0.3: pass\nsignal.pause()' & wait")
    try:
        sample = wait_until(
            lambda: (s := spawn.sample_tree(record)) and s.cpu_seconds > 0.2 and s,
            timeout=60, message="cpu burn")
        assert sample.rss > 60_000_000
    finally:
        spawn.kill_tree(record, signal.SIGKILL)
    exit_info(task)


def test_a_lost_proc_record_is_rebuilt_from_the_wrappers_pid_file(tmp_path):
    task = tmp_path / "t"
    record = launch(task, "sleep 5")
    (task / "proc.json").unlink()  # the drone died before writing it
    rebuilt = spawn.recover(task)
    assert rebuilt is not None
    assert (rebuilt.pid, rebuilt.wrapper_pid) == (record.pid, record.wrapper_pid)
    assert rebuilt.create_time == record.create_time and spawn.wrapper_alive(rebuilt)
    spawn.kill_tree(record, signal.SIGKILL)
    exit_info(task)


def test_a_task_whose_proc_record_a_power_cut_lost_is_known_to_have_died_in_the_reboot(
        tmp_path):
    """proc.json is not fsynced (drone/spawn.py): after a power cut only pid.json may be left,
    naming a start before this boot; the rebuilt record says the host rebooted under it."""
    task = tmp_path / "t"
    task.mkdir()
    (task / "launch.json").write_text("{}")
    before_boot = psutil.boot_time() - 600
    (task / "pid.json").write_text(json.dumps({"pid": 1, "wrapper_pid": 1,
                                               "started_at": before_boot}))
    rebuilt = spawn.recover(task, wait=0)
    assert rebuilt is not None and spawn.rebooted_since(rebuilt)


def test_a_pid_file_naming_someone_elses_process_is_not_adopted(tmp_path):
    task = tmp_path / "t"
    task.mkdir()
    (task / "launch.json").write_text("{}")
    # pid 1 started long before this "task": a recycled pid must not be taken for it.
    (task / "pid.json").write_text(json.dumps({"pid": 1, "wrapper_pid": 1,
                                               "started_at": 2_000_000_000.0}))
    rebuilt = spawn.recover(task, wait=0)
    assert rebuilt is not None and rebuilt.create_time is None
    assert not spawn.wrapper_alive(rebuilt)
    assert spawn.sample_tree(rebuilt) is None


def test_no_launch_means_nothing_to_recover(tmp_path):
    assert spawn.recover(tmp_path, wait=0) is None
