"""``dragoon run`` and ``dragoon logs`` write stdout and stderr in the order the task wrote them.

Seen on one terminal (here: one pipe for both fds), the two streams interleave
as the task's own did, from the drone's ``order`` stream.
"""

from __future__ import annotations

import subprocess

from tests.cli.conftest import Pilot
from tests.drone.test_wrapper_order import LINES, PACED
from tests.support.relay import wait_until

PROGRAM = [f"{w} {i}" for i in range(1, LINES + 1) for w in ("out", "err")]


def merged(pilot: Pilot, *args: str) -> list[str]:
    """The command's stdout and stderr through one pipe, as a terminal would show them."""
    done = subprocess.run(pilot.argv(*args), env=pilot.env, cwd=pilot.home, timeout=120,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert done.returncode == 0, done.stdout[-2000:]
    return done.stdout.decode().splitlines()


def test_run_then_logs_show_one_terminal_the_program_order(pilot: Pilot, drone: str) -> None:
    assert merged(pilot, "run", drone, "--name", "ordered", "--", PACED) == PROGRAM
    task_id = pilot.json("tasks", "--limit", "1")[0]["id"]
    wait_until(lambda: pilot.json("task", task_id)["state"] == "succeeded", timeout=30,
               interval=0.2, message="the task's end")
    assert merged(pilot, "logs", task_id) == PROGRAM
    assert merged(pilot, "logs", "-f", task_id) == PROGRAM
    assert merged(pilot, "logs", "--stream", "stderr", task_id) == PROGRAM[1::2]
