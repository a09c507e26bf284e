"""``dragoon notify`` inside a task: a regular inbox file or one clear line, never a hang.

A task owns its directory and may put a FIFO, a device or a link where
``$DRAGOON_INBOX`` points; ``notify`` (a real subprocess, with a deadline) must
refuse each with one line and exit 1 instead of blocking on a FIFO's open.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.relay import REPO


def notify(inbox: Path | str, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dragoon", "notify", *words], cwd=REPO,
                          env={**os.environ, "DRAGOON_INBOX": str(inbox)}, capture_output=True,
                          text=True, timeout=30, check=False)


def assert_refused(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dragoon notify: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], done.stderr


def test_a_regular_inbox_gets_one_line(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.touch()
    done = notify(inbox, "epoch", "3\ndone")
    assert done.returncode == 0, done.stderr
    assert inbox.read_text() == "epoch 3 done\n"


def test_a_fifo_without_a_reader_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "inbox"
    os.mkfifo(fifo)
    assert_refused(notify(fifo, "hello"), str(fifo), "FIFO")


def test_a_fifo_with_a_reader_is_refused_and_gets_nothing(tmp_path: Path) -> None:
    fifo = tmp_path / "inbox"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert_refused(notify(fifo, "hello"), "is not a regular file")
        assert os.read(reader, 100) == b""  # nothing was written into it
    finally:
        os.close(reader)


def test_a_device_is_refused(tmp_path: Path) -> None:
    assert_refused(notify("/dev/null", "hello"), "/dev/null is not a regular file")


def test_a_symbolic_link_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.touch()
    link = tmp_path / "inbox"
    link.symlink_to(target)
    assert_refused(notify(link, "hello"), "symbolic link")
    assert target.read_text() == ""
