"""The wrapper reads the task's stdout and stderr itself and records their order (``order``).

The order is the order in which the wrapper read the two pipes: exact when the
task's writes of the two streams are apart by more than the wrapper's wake-up.
The program-order test makes that certain without a timing: the task waits
for each line to reach its spool (the wrapper read it) before the next one.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
from dragoon.shared.order import OrderReader, Run

from tests.drone.test_spawn import exit_info, launch
from tests.support.relay import wait_until

LINES = 200
# Each line waits until the wrapper has put the previous one in its spool (the task dir: the
# inbox's folder under a drone, the working directory under the bare wrapper).
PACED = f"""
spool=$(dirname "${{DRAGOON_INBOX:-$PWD/inbox}}")
size() {{ stat -c %s "$spool/$1"; }}
for i in $(seq 1 {LINES}); do
  before=$(size stdout); echo "out $i"; until [ "$(size stdout)" -gt "$before" ]; do :; done
  before=$(size stderr); echo "err $i" >&2; until [ "$(size stderr)" -gt "$before" ]; do :; done
done
"""


def replay(task: Path) -> list[tuple[str, bytes]]:
    """The two spools cut and interleaved as the order file says."""
    reader = OrderReader()
    runs: list[Run] = reader.feed((task / "order").read_bytes())
    assert reader.header_seen and reader.broken is None
    data = {s: (task / s).read_bytes() for s in ("stdout", "stderr")}
    at = dict.fromkeys(data, 0)
    out = []
    for run in runs:
        out.append((run.stream, data[run.stream][at[run.stream]:at[run.stream] + run.size]))
        at[run.stream] += run.size
    assert at == {s: len(d) for s, d in data.items()}  # every byte counted, once
    return out


def as_lines(pieces: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    return [(stream, line) for stream, data in pieces for line in data.decode().splitlines()]


def test_the_order_file_replays_the_program_order(tmp_path: Path) -> None:
    task = tmp_path / "t"
    launch(task, PACED, cwd=task)
    assert exit_info(task, timeout=60)["exit_code"] == 0
    expected = [(s, f"{w} {i}") for i in range(1, LINES + 1)
                for s, w in (("stdout", "out"), ("stderr", "err"))]
    assert as_lines(replay(task)) == expected


def test_a_fast_writer_of_both_streams_is_counted_byte_for_byte(tmp_path: Path) -> None:
    task = tmp_path / "t"
    launch(task, "yes out | head -c 3000000 & yes err | head -c 2000000 >&2; wait; "
                 "for i in $(seq 1 500); do echo o$i; echo e$i >&2; done")
    assert exit_info(task, timeout=60)["exit_code"] == 0
    pieces = replay(task)
    assert (task / "stdout").stat().st_size == 3000000 + sum(len(f"o{i}\n") for i in range(1, 501))
    tail = [line for stream, line in as_lines(pieces) if line[0] in "oe" and line[1:].isdigit()]
    assert [x for x in tail if x[0] == "o"] == [f"o{i}" for i in range(1, 501)]


def test_a_leftover_s_last_words_on_sigterm_are_kept(tmp_path: Path) -> None:
    task = tmp_path / "t"
    launch(task, "(trap 'echo last-words >&2; exit 0' TERM; echo up; "
                 "while :; do sleep 0.05; done) & "
                 "until [ -s stdout ]; do sleep 0.01; done; exit 3", cwd=tmp_path / "t")
    assert exit_info(task, timeout=30)["exit_code"] == 3
    lines = as_lines(replay(task))  # bash may also say its sleep was "Terminated"
    assert lines[0] == ("stdout", "up") and lines[-1] == ("stderr", "last-words")


def test_a_process_that_left_the_group_cannot_hold_the_task_open(tmp_path: Path) -> None:
    task = tmp_path / "t"
    start = time.monotonic()
    launch(task, "setsid bash -c 'echo $$ > escaped; while :; do echo still; sleep 0.1; done' & "
                 "until [ -s escaped ]; do sleep 0.01; done; echo main done", cwd=tmp_path / "t")
    pid_file = task / "escaped"
    escaped = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(),
                             message="the escaped process's pid"))
    try:
        info = exit_info(task, timeout=30)
        assert info["exit_code"] == 0 and time.monotonic() - start < 20
        assert b"main done\n" in (task / "stdout").read_bytes()
        replay(task)  # whole: the order covers every byte the spool got
        # The pipe is closed: the escaped writer gets EPIPE/SIGPIPE and its output ends.
        wait_until(lambda: not psutil.pid_exists(escaped)
                   or psutil.Process(escaped).status() == psutil.STATUS_ZOMBIE,
                   timeout=10, message="the escaped writer ended by SIGPIPE")
    finally:
        if psutil.pid_exists(escaped):
            os.kill(escaped, signal.SIGKILL)


def test_a_start_failure_notice_is_in_the_order_too(tmp_path: Path) -> None:
    import asyncio

    from dragoon.drone import spawn

    task = tmp_path / "t"
    task.mkdir()
    asyncio.run(spawn.launch(task, command="true", cwd=tmp_path / "nope", env=dict(os.environ)))
    assert exit_info(task)["exit_code"] is None  # dragoon's failure, not the command's
    [(stream, data)] = replay(task)
    assert stream == "stderr" and data.startswith(b"dragoon: cannot start the task")


def test_a_spool_that_cannot_grow_drops_output_not_the_task(tmp_path: Path) -> None:
    """A full disk (here a file-size limit on the wrapper) must not kill the task: the wrapper
    keeps reading its pipes, stores what fits, and the order counts only what was stored."""
    import json
    import resource
    import subprocess
    import sys

    from dragoon.drone import spawn

    task = tmp_path / "t"
    task.mkdir()
    limit = 4096
    (task / "launch.json").write_text(json.dumps({
        "command": "yes | head -c 100000; echo done >&2; exit 4", "cwd": str(task)}))

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([sys.executable, "-I", "-S", spawn.WRAPPER, str(task)],
                          preexec_fn=small_files, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert exit_info(task)["exit_code"] == 4  # the task ran to its end
    assert (task / "stdout").stat().st_size == limit
    assert (task / "stderr").read_bytes() == b"done\n"
    assert b"output dropped, a spool write failed" in done.stderr
    assert as_lines(replay(task))[-1] == ("stderr", "done")
