"""A drone box installs dragoon without extras, and that lean install runs tasks.

The package is installed for real (a wheel built by pip, not an editable
install) into a fresh venv with the default dependencies only, so this also
pins the installed layout under the ``dragoon`` namespace. The relay runs from
the test venv, which has every extra; the drone runs from the lean venv. Last,
the README's own line (``pip install '.[all]'``, then ``dragoon demo``) runs
in a checkout, where the checkout's ``dragoon/`` folder could shadow the
installed package.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared.models import FINAL_STATES

from tests.support import records
from tests.support.relay import REPO, RelayProcess, wait_until

pytestmark = pytest.mark.slow

INSTALL_TIMEOUT = 900  # pip fetches the dependencies (and setuptools to build)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a build needs, copied out of the checkout: building in place would write build/
    into it, and setuptools reuses a stale build/lib in the next wheel."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    dest = tmp_path_factory.mktemp("checkout")
    for name in ("pyproject.toml", project["project"]["readme"]):
        shutil.copy2(REPO / name, dest / name)
    for folder in folders:
        shutil.copytree(REPO / folder, dest / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _venv_with(root: Path, requirement: str) -> Path:
    """A fresh venv under ``root`` with ``pip install REQUIREMENT``; its bin/ directory."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                           requirement], capture_output=True, text=True, check=False,
                          timeout=INSTALL_TIMEOUT, cwd=root)
    assert done.returncode == 0, f"pip install {requirement} failed:\n{done.stdout}\n{done.stderr}"
    return venv / "bin"


@pytest.fixture(scope="module")
def lean(tmp_path_factory: pytest.TempPathFactory, source: Path) -> Path:
    """A drone box's install: ``pip install /path/to/dragoon``, no extra."""
    return _venv_with(tmp_path_factory.mktemp("lean"), str(source))


def _lean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("DRAGOON_")}
    return {**env, "PYTHONUNBUFFERED": "1"}


def _in_lean(lean: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a program of the lean venv, away from the checkout (whose folders would shadow)."""
    return subprocess.run([str(lean / argv[0]), *argv[1:]], capture_output=True, text=True,
                          check=False, timeout=60, cwd=cwd, env=_lean_env())


def test_the_lean_install_has_neither_textual_nor_fastapi(lean: Path, tmp_path: Path) -> None:
    for heavy in ("textual", "fastapi", "uvicorn", "rich", "pyotp"):
        done = _in_lean(lean, "python", "-c", f"import {heavy}", cwd=tmp_path)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, heavy
    # The parts are installed files under the namespace, not the checkout's folders.
    done = _in_lean(lean, "python", "-c",
                    "import dragoon.drone.daemon, dragoon.shared.keys;"
                    "print(dragoon.drone.daemon.__file__)", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    installed = Path(done.stdout.strip())
    assert installed.is_relative_to(lean.parent) and "site-packages" in installed.parts


@pytest.mark.parametrize(("argv", "line"), [
    (("relay", "serve", "--data", "relay"),
     "dragoon relay: needs the relay extra: pip install 'dragoon[relay]'"),
    (("relay", "--help"), "dragoon relay: needs the relay extra: pip install 'dragoon[relay]'"),
    (("submit", "box", "--", "true"),
     "dragoon submit: needs the cockpit extra: pip install 'dragoon[cockpit]'"),
    (("cockpit",), "dragoon cockpit: needs the cockpit extra: pip install 'dragoon[cockpit]'"),
    (("demo", "--headless"),
     "dragoon demo: needs the relay and cockpit extras: pip install 'dragoon[all]'"),
], ids=lambda value: " ".join(value) if isinstance(value, tuple) else None)
def test_a_verb_of_a_missing_extra_says_which_in_one_line(lean: Path, tmp_path: Path,
                                                          argv: tuple[str, ...],
                                                          line: str) -> None:
    done = _in_lean(lean, "dragoon", *argv, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == line + "\n" and done.stdout == ""


def test_help_on_the_lean_install_marks_the_verbs_it_lacks(lean: Path, tmp_path: Path) -> None:
    done = _in_lean(lean, "dragoon", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = " ".join(done.stdout.split("Commands:")[1].split())  # undo the wrapping
    assert "serve. (needs dragoon[relay])" in rows
    assert "the cockpit. (needs dragoon[relay,cockpit])" in rows
    assert "Drone host: join a relay, run the daemon. notify" in rows  # nothing lacking


class LeanDrone:
    """``dragoon drone join`` and ``dragoon drone run`` from the lean venv."""

    def __init__(self, lean: Path, data_dir: Path) -> None:
        self.lean = lean
        self.data_dir = data_dir
        self.log_path = data_dir.parent / "lean-drone.log"
        self.process: subprocess.Popen[bytes] | None = None

    def join(self, token: str) -> None:
        done = _in_lean(self.lean, "dragoon", "drone", "join", token, "--data",
                        str(self.data_dir), cwd=self.data_dir.parent)
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.lean / "dragoon"), "drone", "run", "--data", str(self.data_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.data_dir.parent,
                env=_lean_env())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def lean_drone(lean: Path, tmp_path: Path) -> Iterator[LeanDrone]:
    drone = LeanDrone(lean, tmp_path / "drone")
    try:
        yield drone
    finally:
        drone.stop()


def test_a_drone_from_the_lean_install_runs_a_task(lean_drone: LeanDrone,
                                                   tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.2}) as relay:
        try:
            pilot = relay.pilot("alice")
            lean_drone.join(relay.enroll("lean-1"))
            lean_drone.start()
            task_id = pilot.submit("echo hi", drone="lean-1")["id"]

            def finished() -> dict[str, Any] | None:
                task: dict[str, Any] = pilot.get(f"/v1/tasks/{task_id}").json()
                return task if task["state"] in FINAL_STATES else None

            try:
                task = wait_until(finished, timeout=60, interval=0.1, message="task finished")
            except TimeoutError:
                raise AssertionError(f"the lean drone never finished {task_id}:\n"
                                     f"{lean_drone.log_text()[-3000:]}") from None
            assert task["state"] == "succeeded" and task["exit_code"] == 0, task
            # Sealed on the lean drone (PyNaCl is a drone dependency), opened as the pilot does.
            assert records.output(pilot, task_id, whole=True) == b"hi\n"
        finally:
            lean_drone.stop()
            relay.kill9()  # its graceful stop waits on held long-polls; not under test


def test_the_readme_line_runs_the_demo_in_a_checkout(tmp_path_factory: pytest.TempPathFactory,
                                                    source: Path, tmp_path: Path) -> None:
    # The README's line, in the checkout: the demo's relay and drone subprocesses start there
    # too, where the checkout's dragoon/ folder (the entry point alone) sits in the cwd.
    full = _venv_with(tmp_path_factory.mktemp("full"), f"{source}[all]")
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    env = {**_lean_env(), "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp")}
    done = subprocess.run([str(full / "dragoon"), "demo", "--headless"], capture_output=True,
                          text=True, check=False, timeout=120, cwd=source, env=env)
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stderr and "artifacts: out/model.txt" in done.stderr
