"""A follower whose session ends (a logout from another client) stops at once with one line.

``dragoon logs -f`` and ``dragoon inbox -f`` are real subprocesses following a
real relay; once each has shown it is following (it printed what was already
there), the same pilot logs out from another process. The follower must end
with the session exit code (3) and one line that says to log in again, not
retry for minutes.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dragoon.cockpit.cli import exit_codes as X

from tests.cli.conftest import Pilot, make_pilot
from tests.support import records
from tests.support.relay import DroneClient, RelayProcess

ENDED = "dragoon: session ended: log in again with `dragoon login`"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path_factory.mktemp("ended") / "relay") as process:
        yield process


@pytest.fixture(scope="module")
def drone(relay: RelayProcess) -> DroneClient:
    return relay.drone("box-1", ["cpu"], slots=8)


@pytest.fixture
def pilot(relay: RelayProcess, tmp_path: Path, drone: DroneClient) -> Pilot:
    pilot = make_pilot(relay, tmp_path, "p" + tmp_path.name[-8:].replace("_", ""))
    pilot.login()
    pilot.trust(drone)
    return pilot


def read_until(fd: int, needle: bytes, *, timeout: float = 30) -> bytes:
    """What ``fd`` gave until ``needle`` came (or the writer closed it, or the deadline)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
    return seen


def follow_until_logged_out(pilot: Pilot, *args: str, first_line: bytes) -> tuple[int, str]:
    """Start ``dragoon ARGS``, read until it printed ``first_line``, log out elsewhere,
    and return its exit code and stderr."""
    follower = pilot.popen(*args)
    try:
        assert follower.stdout is not None and follower.stderr is not None
        shown = read_until(follower.stdout.fileno(), first_line)
        assert first_line in shown, shown
        pilot.ok("logout")  # another client of the same pilot: the session is revoked
        code = follower.wait(60)
        return code, follower.stderr.read().decode()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_logs_follow_ends_with_the_session(pilot: Pilot, drone: DroneClient) -> None:
    task = pilot.ok("submit", drone.name, "--", "sleep 600").strip()
    handed = drone.poll().json()["tasks"][0]
    key = drone.task_key(handed)  # the drone seals its output; the relay reads none of it
    sealed = records.seal(key, task, "stdout", b"epoch 1\n", final=False)
    assert drone.log(task, "stdout", 0, sealed).status_code == 200
    code, stderr = follow_until_logged_out(pilot, "logs", "-f", task, first_line=b"epoch 1")
    assert code == X.AUTH, stderr
    assert stderr.strip().splitlines() == [ENDED]


def test_inbox_follow_ends_with_the_session(pilot: Pilot, drone: DroneClient) -> None:
    task = pilot.ok("submit", drone.name, "--", "sleep 600").strip()
    drone.poll()
    assert drone.message(task, 0, "waiting for review").status_code == 200
    code, stderr = follow_until_logged_out(pilot, "inbox", "-f", first_line=b"waiting")
    assert code == X.AUTH, stderr
    assert stderr.strip().splitlines() == [ENDED]


def test_a_revoked_session_is_one_line_for_any_verb(pilot: Pilot) -> None:
    saved = (pilot.home / "state" / "dragoon" / "session.json").read_text()
    pilot.ok("logout")
    (pilot.home / "state" / "dragoon" / "session.json").write_text(saved)
    done = subprocess.run(pilot.argv("tasks"), capture_output=True, text=True,
                          env=pilot.env, timeout=60, check=False)
    assert (done.returncode, done.stderr.strip()) == (X.AUTH, ENDED)
