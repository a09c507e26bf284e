"""Helpers for the drone's tests: waiting on conditions with a deadline, never on a fixed sleep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dragoon.drone import config

from tests.support import records
from tests.support.relay import REPO, PilotSession, RelayProcess, wait_until

T = TypeVar("T")


# ----- end to end: a real relay (tests/support/relay.py) and real drone processes -----

FINAL = {"succeeded", "failed", "timed_out", "cancelled", "lost"}


class DroneProcess:
    """A real ``dragoon drone join`` + ``dragoon drone run`` on its own data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def join(self, token: str, *, slots: int = 1, labels: tuple[str, ...] = (),
             check: bool = True) -> subprocess.CompletedProcess[str]:
        """``dragoon drone join``, run in this process (the same click command; a
        subprocess per drone cost the suite a Python start and the drone's imports each)."""
        from click.testing import CliRunner
        from dragoon.drone.cli import drone

        args = ["join", token, "--data", str(self.data_dir), "--slots", str(slots),
                "--labels", ",".join(labels)]
        done = CliRunner().invoke(drone, args, catch_exceptions=False)
        result = subprocess.CompletedProcess(["dragoon", "drone", *args], done.exit_code,
                                             done.stdout, done.stderr)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def configure(self, **changes: Any) -> None:
        settings = config.load(self.data_dir / "drone.toml")
        for key, value in changes.items():
            setattr(settings, key, value)
        config.save(settings, self.data_dir / "drone.toml")

    def start(self, *, env: dict[str, str] | None = None) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dragoon", "drone", "run", "--data", str(self.data_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        finally:
            log.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


class Fleet:
    """A relay, a pilot, and the drones of one test; everything is stopped at the end."""

    def __init__(self, root: Path, relay: RelayProcess, pilot: PilotSession, *,
                 prefix: str = "") -> None:
        self.root = root
        self.relay = relay
        self.pilot = pilot
        self.prefix = prefix  # drone names are unique per relay; tests sharing one use a prefix
        self.drones: list[DroneProcess] = []

    def name(self, short: str) -> str:
        """The drone's name at the relay for the test's short name."""
        return self.prefix + short

    def drone(self, name: str, *, labels: tuple[str, ...] = (), slots: int = 1,
              start: bool = True, **settings: Any) -> DroneProcess:
        proc = DroneProcess(self.root / f"drone-{name}")
        proc.join(self.relay.enroll(self.name(name), labels), slots=slots, labels=labels)
        settings.setdefault("poll_wait", 5.0)
        proc.configure(**settings)
        self.drones.append(proc)
        if start:
            proc.start()
        return proc

    def submit(self, command: str, **spec: Any) -> str:
        spec.setdefault("grace", 1)
        if spec.get("drone") is not None:
            spec["drone"] = self.name(spec["drone"])
        return str(self.pilot.submit(command, **spec)["id"])

    def task(self, task_id: str) -> dict[str, Any]:
        answer = self.pilot.get(f"/v1/tasks/{task_id}")
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = self.pilot.opened(answer.json())  # its sealed texts opened
        return result

    def wait_state(self, task_id: str, states: set[str] | str = "final", *,
                   timeout: float = 20.0) -> dict[str, Any]:
        wanted = FINAL if states == "final" else ({states} if isinstance(states, str) else states)

        def reached() -> dict[str, Any] | None:
            task = self.task(task_id)
            return task if task["state"] in wanted else None

        try:
            return wait_until(reached, timeout=timeout, interval=0.05,
                              message=f"{task_id} {wanted}")
        except TimeoutError:
            logs = "\n".join(d.log_text()[-3000:] for d in self.drones)
            raise AssertionError(f"{task_id} never reached {wanted}: {self.task(task_id)}\n"
                                 f"drone logs:\n{logs}") from None

    def output(self, task_id: str, stream: str = "stdout", *, whole: bool = False) -> bytes:
        """The stream's plaintext, opened from the relay's sealed records (``whole``: and
        ended by its final record)."""
        return records.output(self.pilot, task_id, stream, whole=whole)

    def stored(self, task_id: str, stream: str = "stdout") -> bytes:
        """The stream as the relay stores it: sealed records."""
        return records.stored_log(self.pilot, task_id, stream)

    def close(self) -> None:
        for proc in self.drones:
            proc.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.2}) as relay:
        group = Fleet(tmp_path, relay, relay.pilot("alice"))
        try:
            yield group
        finally:
            group.close()
            relay.kill9()  # the relay's graceful stop waits on held connections; not under test


@pytest.fixture(scope="module")
def module_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelayProcess,
                                                                              PilotSession]]:
    """One relay and pilot for a module whose tests do not crash or restart the relay."""
    root = tmp_path_factory.mktemp("relay")
    with RelayProcess(root / "relay", config={"sweep_interval": 0.2}) as relay:
        try:
            yield relay, relay.pilot("alice")
        finally:
            relay.kill9()


@pytest.fixture
def shared_fleet(module_relay: tuple[RelayProcess, PilotSession], tmp_path: Path,
                 request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """A fleet on the module's relay; its drones get a per-test prefix and are stopped after."""
    relay, pilot = module_relay
    prefix = f"t{abs(hash(request.node.nodeid)) % 10**8}-"
    group = Fleet(tmp_path, relay, pilot, prefix=prefix)
    try:
        yield group
    finally:
        group.close()
