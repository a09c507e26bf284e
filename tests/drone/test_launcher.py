"""The launcher: a pre-started wrapper that forks one wrapper per task (drone/launcher.py).

Real processes throughout: the launcher, the wrappers it forks, the tasks. What is pinned
is what a cold-started wrapper promised already (own session, env, cwd, default signals
for the task, the task outliving everything of the drone's) plus the launcher's own
promise: it never outlives the drone that started it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
from dragoon.drone import spawn
from dragoon.drone.launcher import Launcher
from dragoon.drone.state import read_json

from tests.support.relay import REPO, wait_until

T = TypeVar("T")
CAUGHT_OR_IGNORED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def exit_info(task_dir: Path) -> dict:
    return wait_until(lambda: read_json(task_dir / "exit.json"), timeout=15,
                      message="exit.json")


def gone_or_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def launch_all(launcher: Launcher | None, tasks: list[tuple[Path, str]],
                     env: dict[str, str] | None = None) -> list[spawn.ProcRecord | None]:
    async def one(task_dir: Path, command: str) -> spawn.ProcRecord | None:
        task_dir.mkdir(parents=True, exist_ok=True)
        _wrapper, record = await spawn.launch(task_dir, command=command, cwd=task_dir,
                                              env=env or dict(os.environ), launcher=launcher)
        return record
    return list(await asyncio.gather(*(one(d, c) for d, c in tasks)))


def with_launcher(body: Callable[[Launcher], Awaitable[T]]) -> T:
    """``body(launcher)`` in an event loop of its own, with a launcher started for it."""
    async def run() -> T:
        launcher = Launcher(spawn.WRAPPER, dict(os.environ))
        assert launcher.start()
        try:
            return await body(launcher)
        finally:
            launcher.close()
    return asyncio.run(run())


def test_forked_wrappers_run_each_task_in_its_own_session_with_its_env_and_cwd(tmp_path):
    async def body(launcher: Launcher) -> tuple[list[spawn.ProcRecord | None], int | None]:
        tasks = [(tmp_path / f"t{i}", 'echo "$MY_VAR $PWD"; ps -o pgid= -o sid= -p $$')
                 for i in range(4)]
        return (await launch_all(launcher, tasks, env={**os.environ, "MY_VAR": "v1"}),
                launcher.pid)

    records, launcher_pid = with_launcher(body)
    assert launcher_pid is not None
    for i, record in enumerate(records):
        task = tmp_path / f"t{i}"
        assert record is not None
        assert exit_info(task)["exit_code"] == 0
        line, ids = (task / "stdout").read_text().splitlines()
        assert line == f"v1 {task}"
        pgid, sid = ids.split()
        assert int(pgid) == int(sid) == record.pid  # the task's own session
        # The wrapper is no launcher: forked from it, then a session of its own.
        assert record.wrapper_pid != launcher_pid
        assert (task / "proc.json").exists() and (task / "pid.json").exists()


@pytest.mark.parametrize("how", ["launcher", "cold"])
def test_the_task_gets_the_signals_the_wrapper_outlives_back_at_their_default(tmp_path, how):
    command = "grep -E '^Sig(Ign|Cgt):' /proc/self/status"

    async def body(launcher: Launcher) -> list[spawn.ProcRecord | None]:
        return await launch_all(launcher if how == "launcher" else None,
                                [(tmp_path / "t", command)])

    assert with_launcher(body)[0] is not None
    assert exit_info(tmp_path / "t")["exit_code"] == 0
    masks = dict(line.split(":") for line in (tmp_path / "t" / "stdout").read_text().split("\n")
                 if line)
    for name in ("SigIgn", "SigCgt"):
        mask = int(masks[name].strip(), 16)
        held = [signum for signum in CAUGHT_OR_IGNORED if mask & (1 << (signum - 1))]
        assert held == [], f"{name} of the task holds {held}"


def test_a_task_outlives_its_launcher_killed_with_sigkill(tmp_path):
    task = tmp_path / "t"
    release = tmp_path / "release"

    async def body(launcher: Launcher) -> spawn.ProcRecord | None:
        [record] = await launch_all(
            launcher, [(task, f"while [ ! -e {release} ]; do sleep 0.02; done; echo done")])
        assert launcher.pid is not None
        os.kill(launcher.pid, signal.SIGKILL)
        return record

    record = with_launcher(body)
    assert record is not None and spawn.wrapper_alive(record)
    release.touch()
    info = exit_info(task)
    assert info["exit_code"] == 0 and (task / "stdout").read_bytes() == b"done\n"


def test_a_launcher_that_died_is_replaced_and_no_task_is_lost_or_doubled(tmp_path):
    async def body(launcher: Launcher) -> tuple[int, list[spawn.ProcRecord | None]]:
        first = launcher.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: gone_or_zombie(first), message="the launcher dead")
        records = await launch_all(launcher, [(tmp_path / f"t{i}", f"echo {i}")
                                              for i in range(3)])
        records += await launch_all(launcher, [(tmp_path / "t3", "echo 3")])
        return launcher.starts, records

    starts, records = with_launcher(body)
    assert all(record is not None for record in records)
    for i in range(4):
        assert exit_info(tmp_path / f"t{i}")["exit_code"] == 0
        assert (tmp_path / f"t{i}" / "stdout").read_text() == f"{i}\n"  # once, not twice
    assert starts == 2  # a new launcher, not a cold start per task from then on


def test_a_launcher_exits_by_itself_when_its_drone_is_killed(tmp_path):
    """A drone killed with SIGKILL cannot close anything: the kernel closes the launcher's
    command pipe, and the launcher, holding no task, exits at that EOF."""
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import asyncio, os, sys
            sys.path.insert(0, {str(REPO)!r})
            from dragoon.drone import spawn
            from dragoon.drone.launcher import Launcher
            async def main():
                launcher = Launcher(spawn.WRAPPER, dict(os.environ))
                launcher.start()
                print(launcher.pid, flush=True)
                await asyncio.sleep(3600)
            asyncio.run(main())
        """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stderr is not None
        said = owner.stdout.readline()
        assert said.strip().isdigit(), f"{said!r} {owner.stderr.read() if owner.poll() else ''}"
        launcher_pid = int(said)
        wait_until(lambda: "--launcher" in psutil.Process(launcher_pid).cmdline(),
                   message="the launcher's command line")
        # In a session of its own, like every wrapper: a signal to the drone's group misses it.
        assert os.getsid(launcher_pid) == launcher_pid
        owner.kill()
        owner.wait(10)
        wait_until(lambda: gone_or_zombie(launcher_pid), timeout=15,
                   message="the orphaned launcher gone")
    finally:
        owner.kill()
        owner.wait(10)
