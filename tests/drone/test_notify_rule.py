"""One rule for an inbox message (shared/spec.py ``check_message``), at every door.

``dragoon notify`` refuses blank text and text over the cap with one line and
exit 2, writing nothing; the drone skips a blank line of the inbox file (and
cuts a long one to fit) and seals it; the relay, which cannot read it, answers
422 to what is not one sealed record at its index and 413 to one over its
``message_max`` (whose default is the same cap). Real subprocesses, a real
relay and a real drone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dragoon.shared.sealed_message import seal_message
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


def test_the_relay_holds_a_sealed_message_to_its_form_and_size(tmp_path: Path) -> None:
    """The relay cannot read a message (sealed under the task key), so the text rule is the
    drone's and notify's; the relay holds a message to being one record at its index
    (422) and to its ``message_max`` (413: the cap plus a record's overhead)."""
    with RelayProcess(tmp_path / "relay") as relay:
        pilot = relay.pilot("alice")
        drone = relay.drone("rule-drone")
        task = pilot.submit("true", drone=drone.name)["id"]
        drone.poll()
        key = drone.task_keys[task]
        at_cap = seal_message(key, task_id=task, index=0, text="x" * MESSAGE_CAP)
        over = seal_message(key, task_id=task, index=1, text="x" * (MESSAGE_CAP + 1))
        elsewhere = seal_message(key, task_id=task, index=7, text="hi")
        for index, sealed, expected in [(1, over, 413), (2, elsewhere, 422),
                                        (2, "not base64!", 422), (2, at_cap[:40], 422),
                                        (0, at_cap, 200)]:
            answer = drone.post("/v1/worker/message",
                                json={"task": task, "index": index, "sealed": sealed})
            assert answer.status_code == expected, (index, answer.text)
        assert [m["text"] for m in pilot.inbox()] == ["x" * MESSAGE_CAP]
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
        found = [m["text"] for m in shared_fleet.pilot.inbox(limit=1000) if m["task"] == task_id]
        return found if len(found) >= 3 else None

    found = wait_until(texts, timeout=20, message="the task's messages")
    assert found[0] == "first" and found[2] == "last" and len(found) == 3, found
    assert found[1].startswith("yyy") and "[truncated:" in found[1]
    assert len(found[1].encode()) <= MESSAGE_CAP


def test_notify_metric_writes_name_number_tokens_before_the_text(tmp_path: Path) -> None:
    from dragoon.shared.metrics_text import parse_metrics

    inbox = tmp_path / "inbox"
    inbox.touch()
    done = notify(inbox, "--metric", "loss=0.31", "--metric", "acc=9e-1", "epoch", "3")
    assert done.returncode == 0, done.stderr
    assert inbox.read_text() == "loss=0.31 acc=9e-1 epoch 3\n"
    assert parse_metrics(inbox.read_text()) == {"loss": 0.31, "acc": 0.9}
    alone = notify(inbox, "--metric", "loss=nan")
    assert alone.returncode == 0, alone.stderr
    assert inbox.read_text().splitlines()[-1] == "loss=nan"


@pytest.mark.parametrize("metric", ["loss", "loss=fast", "9loss=1", "loss="])
def test_notify_refuses_a_metric_that_is_not_name_number(tmp_path: Path, metric: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.touch()
    done = notify(inbox, "--metric", metric, "text")
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dragoon notify: --metric: "), done.stderr
    assert inbox.read_bytes() == b""


def test_notify_metrics_and_text_over_the_cap_are_refused(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.touch()
    done = notify(inbox, "--metric", "loss=1", "x" * MESSAGE_CAP)
    assert done.returncode == 2, done
    assert f"over the cap of {MESSAGE_CAP}" in done.stderr
    assert inbox.read_bytes() == b""


def test_notify_with_neither_text_nor_metric_is_one_line(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.touch()
    done = notify(inbox)
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1
    assert inbox.read_bytes() == b""
