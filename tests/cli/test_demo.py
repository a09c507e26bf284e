"""``dragoon demo --headless``: the whole stack from nothing, and nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from tests.support.relay import REPO, wait_until


def demo_env(tmp_path: Path) -> dict[str, str]:
    """The demo's temp dir lands in ``tmp_path``; HOME is empty so nothing of ours is used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAGOON_")}
    env.update({"TMPDIR": str(tmp_path / "tmp"), "HOME": str(tmp_path / "home"),
                "PYTHONUNBUFFERED": "1"})
    (tmp_path / "tmp").mkdir()
    (tmp_path / "home").mkdir()
    return env


def processes_under(path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(path) in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def test_demo_headless_runs_the_sample_task_and_cleans_up(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    done = subprocess.run([sys.executable, "-m", "dragoon", "demo", "--headless"], env=env,
                          capture_output=True, text=True, timeout=90, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    assert "epoch 6/6" in done.stdout
    assert "warning: epoch 6" in done.stderr
    assert "succeeded" in done.stderr
    assert "artifacts: out/model.txt" in done.stderr
    assert "halfway: epoch 3 of 6 done" in done.stderr
    assert list((tmp_path / "tmp").iterdir()) == []
    assert processes_under(tmp_path / "tmp") == []
    assert list((tmp_path / "home").iterdir()) == []  # the pilot's own HOME is untouched


def test_demo_cleans_up_every_process_and_file_on_ctrl_c(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    demo = subprocess.Popen([sys.executable, "-m", "dragoon", "demo", "--headless"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
                            start_new_session=True)
    assert demo.stderr is not None
    seen: list[bytes] = []
    for line in demo.stderr:
        seen.append(line)
        if b"submitted sample task" in line:
            break
    work = next((tmp_path / "tmp").iterdir())
    assert processes_under(work), "relay and drone should be running now"
    os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    assert demo.wait(30) == 130, b"".join(seen) + demo.stderr.read()
    wait_until(lambda: not processes_under(work), timeout=10, message="no demo process left")
    assert list((tmp_path / "tmp").iterdir()) == []
