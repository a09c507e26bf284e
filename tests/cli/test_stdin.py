"""``dragoon run`` forwards stdin like ``ssh host cmd``: real relay, real drone, real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Pilot
from tests.support.relay import REPO, wait_until

CHUNK = 256 * 1024  # the relay's chunk cap (max_log_chunk)
WINDOW = 4 * 1024 * 1024  # the relay's default stdin_window
DRONE_AHEAD = 1024 * 1024  # drone/stdin.py AHEAD
PIPE = 64 * 1024  # what the task's stdin pipe holds before the wrapper's write blocks


def _run(pilot: Pilot, *args: str, stdin: Any, timeout: float = 120
         ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(pilot.argv("run", *args), stdin=stdin, capture_output=True,
                          env=pilot.env, cwd=pilot.home, timeout=timeout, check=False)


def _task_named(pilot: Pilot, name: str) -> dict[str, Any]:
    found = [t for t in pilot.json("tasks", "--limit", "50") if t.get("name") == name]
    return found[0] if found else {}


def _stdin_state(pilot: Pilot, task_id: str) -> dict[str, int] | None:
    path = pilot.relay.data_dir / "stdin" / task_id / "state.json"
    try:
        state: dict[str, int] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return state


def test_piped_stdin_reaches_the_task(pilot: Pilot, drone: str) -> None:
    done = _run(pilot, drone, "--", "cat", stdin=_pipe_of(b"x\n"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"x\n"


def _pipe_of(data: bytes) -> int:
    """The read end of a pipe that holds ``data`` and then EOF (small data only)."""
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    return read_end


def test_a_large_binary_stdin_comes_back_byte_for_byte(pilot: Pilot, drone: str,
                                                       tmp_path: Path) -> None:
    data = os.urandom(64 * 1024 * 1024)
    big = tmp_path / "big.bin"
    big.write_bytes(data)
    with big.open("rb") as source:
        done = _run(pilot, drone, "--", "cat", stdin=source, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout) == len(data)
    assert hashlib.sha256(done.stdout).hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.fixture
def pty_stdin() -> Iterator[int]:
    controller, terminal = os.openpty()
    try:
        yield terminal
    finally:
        os.close(terminal)
        os.close(controller)


def test_a_terminal_is_not_forwarded_the_task_reads_eof(pilot: Pilot, drone: str,
                                                        pty_stdin: int) -> None:
    done = _run(pilot, drone, "--name", "stdin-tty", "--", "cat; echo done", stdin=pty_stdin,
                timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"done\n"
    assert "stdin" not in _task_named(pilot, "stdin-tty")["spec"]


def test_dev_null_is_no_stdin_at_all(pilot: Pilot, drone: str) -> None:
    done = _run(pilot, drone, "--name", "stdin-null", "--", "cat; echo done",
                stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"done\n"
    assert "stdin" not in _task_named(pilot, "stdin-null")["spec"]


def test_dash_n_forwards_nothing_even_from_a_pipe(pilot: Pilot, drone: str) -> None:
    done = _run(pilot, drone, "-n", "--name", "stdin-n", "--", "cat; echo done",
                stdin=_pipe_of(b"secret\n"), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"done\n"
    assert "stdin" not in _task_named(pilot, "stdin-n")["spec"]


def test_dash_i_forwards_a_terminal(pilot: Pilot, drone: str) -> None:
    controller, terminal = os.openpty()
    try:
        process = subprocess.Popen(pilot.argv("run", "-i", drone, "--", "cat"), stdin=terminal,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=pilot.env, cwd=pilot.home)
        os.write(controller, b"typed\n\x04")  # a line, then Ctrl-D: EOF
        out, err = process.communicate(timeout=60)
    finally:
        os.close(terminal)
        os.close(controller)
    assert process.returncode == 0, err
    assert out == b"typed\n"


def test_dash_i_and_dash_n_together_is_a_usage_error(pilot: Pilot, drone: str) -> None:
    done = _run(pilot, "-i", "-n", drone, "--", "cat", stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert b"contradict" in done.stderr


def test_the_pilot_uploads_no_further_than_the_window(pilot: Pilot, drone: str,
                                                      tmp_path: Path) -> None:
    """While the task does not read, the relay holds at most window + chunk, and the pilot has
    sent no more than that plus what the drone may hold ahead of the task."""
    size = 24 * 1024 * 1024
    source = tmp_path / "stdin.bin"
    source.write_bytes(os.urandom(size))
    gate = tmp_path / "go"
    with source.open("rb") as stdin:
        process = subprocess.Popen(
            pilot.argv("run", drone, "--name", "stdin-window", "--",
                       f"while [ ! -e {gate} ]; do sleep 0.05; done; wc -c"),
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=pilot.env,
            cwd=pilot.home)
    try:
        task_id = wait_until(lambda: _task_named(pilot, "stdin-window").get("id"), timeout=60,
                             interval=0.2, message="task submitted")

        def full() -> dict[str, int] | None:
            state = _stdin_state(pilot, task_id)
            return state if state and state["end"] - state["acked"] >= WINDOW else None

        state = wait_until(full, timeout=120, interval=0.05, message="the window filled")
        for _ in range(20):  # and it stays bounded while the task does not read
            state = _stdin_state(pilot, task_id) or state
            assert state["end"] - state["acked"] < WINDOW + CHUNK
            assert state["end"] <= WINDOW + CHUNK + DRONE_AHEAD + CHUNK + PIPE
        gate.touch()
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-2000:]
    assert out.strip() == str(size).encode()
    wait_until(lambda: not (pilot.relay.data_dir / "stdin" / task_id).exists(), timeout=30,
               message="the finished task's stdin dropped")


def test_a_finished_task_stops_the_upload_quietly(pilot: Pilot, drone: str,
                                                  tmp_path: Path) -> None:
    """`head -c 1` reads one byte and ends: run exits with the task, saying nothing."""
    source = tmp_path / "more.bin"
    source.write_bytes(b"y" * (16 * 1024 * 1024))
    with source.open("rb") as stdin:
        done = _run(pilot, drone, "--", "head -c 1", stdin=stdin, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"y"
    assert done.stderr == b""


# -- a drone restarted mid-stream -----------------------------------------------------------


def _start_drone(data: Path) -> subprocess.Popen[bytes]:
    log = (data.parent / "drone.log").open("ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "dragoon", "drone", "run", "--data",
                                 str(data)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    finally:
        log.close()


def test_a_drone_restarted_mid_stream_delivers_every_byte_once(pilot: Pilot,
                                                               tmp_path: Path) -> None:
    name = "stdin-restart"
    data_dir = tmp_path / "drone" / "data"
    data_dir.parent.mkdir(parents=True)
    token = pilot.ok("enroll", name).strip()
    subprocess.run([sys.executable, "-m", "dragoon", "drone", "join", token, "--data",
                    str(data_dir)], check=True, capture_output=True, cwd=REPO, timeout=60)
    drone = _start_drone(data_dir)
    payload = os.urandom(12 * 1024 * 1024)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    gate = tmp_path / "go"
    try:
        wait_until(lambda: any(d["name"] == name and d["state"] == "online"
                               for d in pilot.json("drones")),
                   timeout=60, interval=0.2, message="drone online")
        with source.open("rb") as stdin:
            process = subprocess.Popen(
                pilot.argv("run", name, "--name", name, "--",
                           f"head -c 100000; while [ ! -e {gate} ]; do sleep 0.05; done; "
                           "sha256sum"),
                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=pilot.env,
                cwd=pilot.home)
        task_id = wait_until(lambda: _task_named(pilot, name).get("id"), timeout=60,
                             interval=0.2, message="task submitted")
        spool = data_dir / "tasks" / task_id / "stdin"
        wait_until(lambda: spool.exists() and spool.stat().st_size > 200_000, timeout=120,
                   message="the drone spooled stdin")
        drone.kill()  # SIGKILL: no goodbye; the wrapper and the task go on
        drone.wait(30)
        drone = _start_drone(data_dir)
        gate.touch()
        out, err = process.communicate(timeout=300)
    finally:
        drone.terminate()
        try:
            drone.wait(20)
        except subprocess.TimeoutExpired:
            drone.kill()
    assert process.returncode == 0, err[-2000:]
    first, digest = out[:100000], out[100000:].split()[0].decode()
    assert first == payload[:100000]
    assert digest == hashlib.sha256(payload[100000:]).hexdigest()


def test_detaching_closes_the_tasks_stdin_after_what_was_sent(pilot: Pilot, drone: str) -> None:
    """Ctrl-C leaves the task running; it reads EOF after the bytes it got, not wait for ever."""
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(pilot.argv("run", drone, "--name", "stdin-detach", "--",
                                              "cat; echo after-eof"),
                                   stdin=read_end, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=pilot.env, cwd=pilot.home)
        os.close(read_end)
        os.write(write_end, b"partial\n")  # and the pipe stays open: no EOF from here
        assert process.stdout is not None
        assert process.stdout.readline() == b"partial\n"
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 130
    finally:
        os.close(write_end)
    task = _task_named(pilot, "stdin-detach")
    wait_until(lambda: pilot.json("task", task["id"])["state"] == "succeeded", timeout=60,
               interval=0.2, message="the detached task read EOF and ended")
    assert pilot.ok("logs", task["id"]) == "partial\nafter-eof\n"


def test_a_closed_stdin_is_no_stdin(pilot: Pilot, drone: str) -> None:
    done = subprocess.run(pilot.argv("run", drone, "--name", "stdin-closed", "--",
                                     "cat; echo done"),
                          capture_output=True, env=pilot.env, cwd=pilot.home, timeout=60,
                          check=False, preexec_fn=lambda: os.close(0))
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"done\n"
    assert "stdin" not in _task_named(pilot, "stdin-closed")["spec"]
