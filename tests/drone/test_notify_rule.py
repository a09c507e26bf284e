"""One rule for an inbox message (shared/spec.py ``check_message``), at every door.

``dragoon notify`` refuses blank text and text over the cap with one line and
exit 2, writing nothing; the drone skips a blank line of the inbox file (and
cuts a long one to fit); the relay answers 422 to a message that breaks the
rule (and 413 to one over its ``message_max``, whose default is the same
cap). Real subprocesses, a real relay and a real drone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dragoon.shared.spec import MESSAGE_CAP

from tests.drone.conftest import Fleet
from tests.support.relay import REPO, RelayProcess, wait_until


def notify(inbox: Path, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dragoon", "notify", *words], cwd=REPO,
                          env={**os.environ, "DRAGOON_INBOX": str(inbox)}, capture_output=True,
                          text=True, timeout=30, check=False)


@pytest.mark.parametrize("words,reason", [
    ([""], "is empty or only blanks"),
    (["   "], "is empty or only blanks"),
    (["\n", "\t"], "is empty or only blanks"),
    (["é" * (MESSAGE_CAP // 2 + 1)], f"over the cap of {MESSAGE_CAP}"),
])
def test_notify_refuses_what_is_no_message(tmp_path: Path, words: list[str],
                                           reason: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.touch()
    done = notify(inbox, *words)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dragoon notify: text: "), done.stderr
    assert reason in lines[0]
    assert inbox.read_bytes() == b""


def test_notify_takes_text_right_at_the_cap(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.touch()
    done = notify(inbox, "x" * MESSAGE_CAP)
    assert done.returncode == 0, done.stderr
    assert inbox.read_text() == "x" * MESSAGE_CAP + "\n"


def test_the_relay_refuses_a_blank_message(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay") as relay:
        drone = relay.drone("rule-drone")
        for text in ("", "  \t ", "\n"):
            answer = drone.message("t-aaaaaaaaaa", 0, text)
            assert answer.status_code == 422, (text, answer.text)
            assert answer.json()["detail"] == "text: is empty or only blanks; say something"
        relay.kill9()


def test_the_drone_skips_blank_lines_and_cuts_long_ones(shared_fleet: Fleet) -> None:
    shared_fleet.drone("d1")
    long_line = "y" * (MESSAGE_CAP + 500)
    task_id = shared_fleet.submit(
        'echo >> "$DRAGOON_INBOX"; echo "   " >> "$DRAGOON_INBOX"; '
        'echo first >> "$DRAGOON_INBOX"; printf "\\t\\n" >> "$DRAGOON_INBOX"; '
        f'echo {long_line} >> "$DRAGOON_INBOX"; echo last >> "$DRAGOON_INBOX"',
        drone="d1")
    assert shared_fleet.wait_state(task_id)["state"] == "succeeded"

    def texts() -> list[str] | None:
        answer = shared_fleet.pilot.get("/v1/messages", params={"limit": 1000})
        found = [m["text"] for m in answer.json()["messages"] if m["task"] == task_id]
        return found if len(found) >= 3 else None

    found = wait_until(texts, timeout=20, message="the task's messages")
    assert found[0] == "first" and found[2] == "last" and len(found) == 3, found
    assert found[1].startswith("yyy") and "[truncated:" in found[1]
    assert len(found[1].encode()) <= MESSAGE_CAP
