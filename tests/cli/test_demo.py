"""``dragoon demo --headless``: the whole stack from nothing, and nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

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


class DemoOnATerminal:
    """``dragoon demo`` (with its cockpit) on a pty that is its controlling terminal.

    The demo leads its own session, as under a shell in a terminal window: closing
    the pty's master is what closing that window does (the kernel hangs up the
    session: SIGHUP). A thread drains the screen so the cockpit never blocks.
    """

    def __init__(self, env: dict[str, str]) -> None:
        import fcntl
        import struct
        import termios
        import threading

        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))

        def take_terminal() -> None:  # in the child, after setsid
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            [sys.executable, "-m", "dragoon", "demo"], stdin=slave, stdout=slave,
            stderr=slave, env={**env, "TERM": "xterm-256color"}, cwd=REPO,
            start_new_session=True, preexec_fn=take_terminal)
        os.close(slave)
        self.master: int | None = master
        self.screen = bytearray()
        self.reader = threading.Thread(target=self._drain, args=(master,), daemon=True)
        self.reader.start()

    def _drain(self, master: int) -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            self.screen += data

    def shown(self) -> str:
        return bytes(self.screen).decode(errors="replace")

    def type(self, keys: bytes) -> None:
        assert self.master is not None
        os.write(self.master, keys)

    def hang_up(self) -> None:
        assert self.master is not None
        os.close(self.master)
        self.master = None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.master is not None:
            self.hang_up()


@pytest.mark.parametrize("ending", ["q", "ctrl-c", "sigterm", "sighup"])
def test_the_demo_cleans_up_however_it_ends(tmp_path: Path, ending: str) -> None:
    env = demo_env(tmp_path)
    demo = DemoOnATerminal(env)
    try:
        wait_until(lambda: "opening the cockpit" in demo.shown(), timeout=120, interval=0.2,
                   message=f"the demo's cockpit opening\n{demo.shown()[-2000:]}")
        work = next((tmp_path / "tmp").iterdir())
        assert processes_under(work), "relay and drone should be running now"
        # The cockpit has drawn its screen once the demo's drone is on it.
        wait_until(lambda: demo.shown().count("demo-drone") >= 1 and "\x1b[?1049h" in
                   demo.shown(), timeout=60, interval=0.2, message="the cockpit on screen")
        if ending == "q":
            demo.type(b"q")
        elif ending == "ctrl-c":
            os.killpg(demo.process.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
        elif ending == "sigterm":
            demo.process.send_signal(signal.SIGTERM)  # `kill PID`, the demo alone
        else:
            demo.hang_up()  # the terminal window closes
        code = demo.process.wait(60)
        assert code == (130 if ending != "q" else code), demo.shown()[-2000:]
        if ending == "q":
            assert code in (0, 1)  # 1: the sample task had not succeeded yet when q came
        wait_until(lambda: not processes_under(work), timeout=30, interval=0.2,
                   message=f"no demo process left after {ending}")
        wait_until(lambda: not work.exists(), timeout=30, interval=0.2,
                   message=f"the demo's temp dir removed after {ending}")
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        demo.close()
