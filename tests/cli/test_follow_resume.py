"""``dragoon inbox -f`` across a relay crash: every message printed once, every one acknowledged.

Each test runs its own relay (it is killed) and a test drone made from shared/
(tests/support/relay.py) that sends the messages, so that what arrives and when
is the test's. ``logs -f`` across a restart is pinned in test_run.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.cli.conftest import Pilot, make_pilot
from tests.support.relay import DroneClient, RelayProcess, wait_until


class Lines:
    """Everything a stream of the follower writes, read on a thread."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)

    def start(self) -> Lines:
        self._thread.start()
        return self

    def _read(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self.lines.append(line.decode())

    def join(self) -> None:
        self._thread.join(15)


@pytest.fixture
def talker(tmp_path: Path) -> Iterator[tuple[RelayProcess, Pilot, DroneClient, str]]:
    """A relay, a logged-in CLI pilot, and a test drone holding a task it can send messages for."""
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.2}) as relay:
        pilot = make_pilot(relay, tmp_path, "alice")
        pilot.login()
        drone = relay.drone("talker")
        pilot.trust(drone)
        task = pilot.ok("submit", "talker", "--", "true").strip()
        assert [t["id"] for t in drone.poll().json()["tasks"]] == [task]
        yield relay, pilot, drone, task


def _all_acked(pilot: Pilot) -> None:
    """Each message is acknowledged just after it is printed: wait for the last one's."""
    wait_until(lambda: pilot.json("inbox", "--no-ack") == [], timeout=20, interval=0.2,
               message="every message acknowledged")


def _stop(follower: subprocess.Popen[bytes]) -> None:
    follower.send_signal(signal.SIGINT)
    assert follower.wait(15) == 130


def test_inbox_follow_resumes_after_a_relay_crash_without_repeats(
    talker: tuple[RelayProcess, Pilot, DroneClient, str]
) -> None:
    relay, pilot, drone, task = talker
    follower = pilot.popen("inbox", "-f", "--json")
    assert follower.stdout is not None
    out = Lines(follower.stdout).start()
    assert drone.message(task, 0, "before").status_code == 200
    wait_until(lambda: len(out.lines) == 1, timeout=20, message="the first message")
    relay.kill9()
    relay.start()
    assert drone.message(task, 1, "after").status_code == 200
    wait_until(lambda: len(out.lines) == 2, timeout=30, message="the message after the crash")
    _all_acked(pilot)
    _stop(follower)
    out.join()
    assert [json.loads(line)["text"] for line in out.lines] == ["before", "after"]


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def test_inbox_follow_acks_through_a_relay_crash_instead_of_dying(
    talker: tuple[RelayProcess, Pilot, DroneClient, str]
) -> None:
    """The crash lands between printing a message and acknowledging it: the follower's
    stdout is a pipe nobody reads yet, so it blocks in the write, before the ack."""
    relay, pilot, drone, task = talker
    follower = pilot.popen("inbox", "-f")
    assert follower.stdout is not None and follower.stderr is not None
    err = Lines(follower.stderr).start()
    count = 24  # 24 lines of ~3.9 kB: more than a pipe holds
    for index in range(count):
        assert drone.message(task, index, f"m{index:02d} " + "x" * 3900).status_code == 200
    wait_until(lambda: "pipe_write" in _wchan(follower.pid) or follower.poll() is not None,
               timeout=20, message="the follower blocked writing a message")
    if "pipe_write" not in _wchan(follower.pid):
        pytest.skip("this kernel does not say where a process waits (/proc/PID/wchan)")
    relay.kill9()
    out = Lines(follower.stdout).start()  # the write goes through; the ack meets no relay
    wait_until(lambda: any("retrying" in line for line in err.lines) or
               follower.poll() is not None, timeout=30, message="the ack refused")
    assert follower.poll() is None, "".join(err.lines)
    relay.start()
    wait_until(lambda: len(out.lines) == count, timeout=30, message="every message")
    assert drone.message(task, count, "last").status_code == 200
    wait_until(lambda: len(out.lines) == count + 1, timeout=30, message="the message after")
    _all_acked(pilot)
    _stop(follower)
    out.join()
    texts = [line.split("  ", 3)[3].split(" ")[0].strip() for line in out.lines]
    assert texts == [f"m{i:02d}" for i in range(count)] + ["last"]
