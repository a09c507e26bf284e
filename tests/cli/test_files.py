"""``dragoon artifacts``/``artifact``/``fetch`` downloads and the ``inbox``, with a real drone."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

from tests.cli.conftest import Pilot
from tests.support.relay import RelayProcess, wait_until

MAKE_BLOB = ("mkdir -p out && head -c 300000 /dev/urandom > out/blob.bin && "
             "sha256sum out/blob.bin | cut -d' ' -f1")


def stored_artifact(relay: RelayProcess, task_id: str) -> Path:
    """Where the relay keeps the task's (one) artifact: by the hash of its sealed bytes."""
    import sqlite3

    with sqlite3.connect(relay.data_dir / "relay.db") as db:
        (sha256,) = db.execute("SELECT sha256 FROM artifacts WHERE task = ?",
                               (task_id,)).fetchone()
    return relay.data_dir / "blobs" / sha256[:2] / sha256


def run_task(pilot: Pilot, drone: str, *args: str) -> tuple[str, str]:
    """Run a task to its end; its id and stdout."""
    done = pilot.cli("run", drone, *args)
    assert done.returncode == 0, done.stderr
    task_id = pilot.json("tasks", "--drone", drone, "--limit", "1")[0]["id"]
    return task_id, done.stdout


def test_artifact_download_matches_its_sha256_and_needs_force_to_overwrite(
        pilot: Pilot, drone: str, tmp_path: Path) -> None:
    task_id, out = run_task(pilot, drone, "--artifact", "out/*", "--", MAKE_BLOB)
    digest = out.strip()
    listed = pilot.json("artifacts", task_id)
    assert [(a["path"], a["sha256"], a["size"]) for a in listed] == [
        ("out/blob.bin", digest, 300000)]
    assert "out/blob.bin" in pilot.ok("artifacts", task_id)

    target = tmp_path / "blob.bin"
    pilot.ok("artifact", task_id, "out/blob.bin", "-o", str(target))
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest

    target.write_bytes(b"mine")
    refused = pilot.cli("artifact", task_id, "out/blob.bin", "-o", str(target))
    assert refused.returncode == 8
    assert "--force" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert target.read_bytes() == b"mine"

    pilot.ok("artifact", task_id, "out/blob.bin", "-o", str(target), "--force")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin"]  # no part file left


def test_artifact_is_named_after_itself_in_the_current_or_given_dir(
        pilot: Pilot, drone: str, tmp_path: Path) -> None:
    task_id, _ = run_task(pilot, drone, "--artifact", "out/*", "--",
                          "mkdir -p out && echo named > out/named.txt")
    pilot.ok("artifact", task_id, "out/named.txt")
    assert (pilot.home / "named.txt").read_text() == "named\n"
    pilot.ok("artifact", task_id, "out/named.txt", "-o", str(tmp_path))
    assert (tmp_path / "named.txt").read_text() == "named\n"


def test_corrupt_artifact_fails_its_sha256_check_and_leaves_no_file(
        pilot: Pilot, drone: str, relay: RelayProcess, tmp_path: Path) -> None:
    task_id, _out = run_task(pilot, drone, "--artifact", "out/*", "--", MAKE_BLOB)
    stored = stored_artifact(relay, task_id)
    assert stored.is_file()
    stored.write_bytes(b"x" * stored.stat().st_size)  # the relay's copy rots on disk
    target = tmp_path / "blob.bin"
    done = pilot.cli("artifact", task_id, "out/blob.bin", "-o", str(target))
    assert done.returncode == 8
    assert "corrupt or altered" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_unknown_artifact_is_exit_4(pilot: Pilot, drone: str) -> None:
    task_id, _ = run_task(pilot, drone, "--", "true")
    done = pilot.cli("artifact", task_id, "no/such.file")
    assert done.returncode == 4
    assert "no/such.file" in done.stderr


def test_fetch_downloads_a_file_from_the_drones_work_dir(pilot: Pilot, drone: str,
                                                         tmp_path: Path) -> None:
    _, out = run_task(pilot, drone, "--", "echo fetched-content > data.txt && pwd")
    remote = f"{out.strip()}/data.txt"
    target = tmp_path / "data.txt"
    pilot.ok("fetch", drone, remote, "-o", str(target))
    assert target.read_text() == "fetched-content\n"
    again = pilot.cli("fetch", drone, remote, "-o", str(target))
    assert again.returncode == 8


def test_fetch_outside_the_fetch_roots_is_refused(pilot: Pilot, drone: str,
                                                  tmp_path: Path) -> None:
    done = pilot.cli("fetch", drone, "/etc/passwd", "-o", str(tmp_path / "p"))
    assert done.returncode == 4
    assert done.stderr.startswith("dragoon: ") and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()


def _messages_of(pilot: Pilot, task_id: str, *flags: str) -> list[str]:
    return [m["text"] for m in pilot.json("inbox", *flags) if m["task"] == task_id]


def test_inbox_shows_messages_and_acks_them_unless_no_ack(pilot: Pilot, drone: str) -> None:
    task_id, _ = run_task(pilot, drone, "--",
                          'echo first-note >> "$DRAGOON_INBOX"; dragoon notify second-note '
                          '|| echo second-note >> "$DRAGOON_INBOX"')
    wait_until(lambda: len(_messages_of(pilot, task_id, "--no-ack")) == 2, timeout=20,
               interval=0.2, message="two messages")
    assert _messages_of(pilot, task_id, "--no-ack") == ["first-note", "second-note"]
    table = pilot.ok("inbox")  # reads and acks
    assert "first-note" in table and task_id in table
    assert _messages_of(pilot, task_id) == []


def test_inbox_follow_prints_new_messages_as_json_lines(pilot: Pilot, drone: str) -> None:
    pilot.ok("inbox")  # start from an empty inbox
    follower = pilot.popen("inbox", "-f", "--json")
    assert follower.stdout is not None
    task_id = pilot.ok("submit", drone, "--", 'echo live-note >> "$DRAGOON_INBOX"').strip()
    line = follower.stdout.readline()
    follower.send_signal(signal.SIGINT)
    assert follower.wait(15) == 130
    message = json.loads(line)
    assert (message["task"], message["text"]) == (task_id, "live-note")
