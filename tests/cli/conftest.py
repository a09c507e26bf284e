"""End-to-end fixtures for the pilot CLI: a real relay, a real drone, ``dragoon`` as a subprocess.

One relay and one drone serve the whole module set (starting them is the slow
part); each test talks to them only through ``dragoon <verb>`` subprocesses
with an environment of its own (HOME, XDG dirs and config in a temp dir), as a
pilot on a fresh machine would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared.trust import pilot_keys_from, read_authorized_pilots, write_authorized_pilots

from tests.support.relay import REPO, RelayProcess, fresh_totp, new_signer, wait_until
from tests.support.sealing import trust_drone, trust_test_drone

DRONE = "cli-drone"


@dataclass
class Pilot:
    """A pilot's machine: its own HOME/XDG dirs, a key, and a way to run ``dragoon``."""

    home: Path
    key: Path
    relay: RelayProcess
    totp_secret: str
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("DRAGOON_") and k != "SSH_AUTH_SOCK"}
        env.update({
            "HOME": str(self.home),
            "XDG_STATE_HOME": str(self.home / "state"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "dragoon", *args]

    def cli(self, *args: str, timeout: float = 60, env: Mapping[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``dragoon ARGS`` to completion, never raising on a non-zero exit; stdin /dev/null,
        so no test forwards whatever the test runner's stdin is (``dragoon run`` would)."""
        return subprocess.run(self.argv(*args), capture_output=True, text=True,
                              timeout=timeout, env=dict(env or self.env), check=False,
                              cwd=cwd or self.home, stdin=subprocess.DEVNULL)

    def ok(self, *args: str, timeout: float = 60) -> str:
        """``dragoon ARGS`` that must succeed; its stdout."""
        done = self.cli(*args, timeout=timeout)
        assert done.returncode == 0, f"dragoon {' '.join(args)}: {done.returncode}\n{done.stderr}"
        return done.stdout

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.argv(*args), env=self.env, cwd=self.home,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)

    def login(self) -> None:
        self.ok("login", "--relay", self.relay.url, "--key", str(self.key),
                "--totp", fresh_totp(self.totp_secret))

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def trust(self, drone: Path | Any) -> None:
        """Add the drone (a real one's data dir, or a test DroneClient) to this pilot's
        known_drones, as `dragoon drones trust NAME FINGERPRINT` would."""
        if isinstance(drone, Path):
            trust_drone(self.env, drone)
        else:
            trust_test_drone(self.env, drone)


# The data dirs of the session's running drones: a pilot made later is authorized on them
# (as `dragoon drone authorize` does on the box; the running drone needs no restart).
_DRONE_DATA: list[Path] = []


def make_pilot(relay: RelayProcess, root: Path, name: str) -> Pilot:
    key = root / name / ".ssh" / "id_ed25519"
    new_signer(key)
    secret = relay.add_operator(name, Path(f"{key}.pub"))
    relay.pilot_keys.append(Path(f"{key}.pub"))  # drones relay.enroll() mints for obey it
    for data in _DRONE_DATA:
        path = data / "authorized_pilots"
        write_authorized_pilots(path, [*read_authorized_pilots(path),
                                       *pilot_keys_from(f"{key}.pub")])
    pilot = Pilot(home=root / name, key=key, relay=relay, totp_secret=secret)
    for data in _DRONE_DATA:  # and it knows them, as a pilot who ran `dragoon drones trust`
        pilot.trust(data)
    return pilot


@pytest.fixture(scope="session")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    root = tmp_path_factory.mktemp("cli-relay")
    with RelayProcess(root / "relay", config={"sweep_interval": 0.2}) as process:
        yield process


@pytest.fixture(scope="session")
def drone(relay: RelayProcess, tmp_path_factory: pytest.TempPathFactory,
          pilot: Pilot) -> Iterator[str]:
    """A real ``dragoon drone run`` subprocess, joined with a token minted by ``dragoon enroll``."""
    data = tmp_path_factory.mktemp("cli-drone") / "data"
    token = pilot.ok("enroll", DRONE, "--labels", "cli,test").strip()
    subprocess.run([sys.executable, "-m", "dragoon", "drone", "join", token, "--data", str(data),
                    "--slots", "6", "--labels", "cli,test"], check=True, capture_output=True,
                   cwd=REPO, timeout=30)
    _DRONE_DATA.append(data)
    log = open(data.parent / "drone.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, "-m", "dragoon", "drone", "run", "--data",
                                str(data)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_until(lambda: any(d["name"] == DRONE and d["state"] == "online"
                               for d in pilot.json("drones")),
                   timeout=30, interval=0.2, message="drone online")
        yield DRONE
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def pilot(relay: RelayProcess, tmp_path_factory: pytest.TempPathFactory) -> Pilot:
    """The logged-in pilot most tests share."""
    pilot = make_pilot(relay, tmp_path_factory.mktemp("cli-pilots"), "alice")
    pilot.login()
    return pilot


@pytest.fixture
def fresh_pilot(relay: RelayProcess, tmp_path: Path) -> Pilot:
    """A pilot of its own, registered but not logged in: for login and session tests."""
    return make_pilot(relay, tmp_path, "bob" + tmp_path.name[-6:].replace("_", ""))


def ghost_drone(relay: RelayProcess, root: Path, pilot: Pilot, name: str,
                labels: tuple[str, ...] = ()) -> Path:
    """A drone joined (``dragoon drone join``) but never run, that ``pilot`` trusts: tasks
    for it stay queued."""
    from tests.drone.conftest import DroneProcess

    drone = DroneProcess(root / name)
    drone.join(relay.enroll(name, labels), labels=labels)
    pilot.trust(drone.data_dir)
    return drone.data_dir
