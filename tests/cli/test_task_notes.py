"""An artifact pattern that matched nothing is said, and the task still succeeds.

It is one of the task's notes: a ``note`` line of ``dragoon task``, a
``dragoon:`` line on stderr after ``dragoon run``, ``notes`` in the JSON, and a
message in the inbox. Against the session's real relay and drone.
"""

from __future__ import annotations

from tests.cli.conftest import Pilot


def test_a_pattern_matching_nothing_is_reported_not_failed(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("run", drone, "--artifact", "out/*.pt", "--artifact", "logs/*.txt", "--",
                     "mkdir -p logs && echo ok > logs/a.txt && echo ran")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran\n"
    assert done.stderr == "dragoon: artifact pattern 'out/*.pt' matched nothing\n"
    task_id = pilot.json("tasks", "--drone", drone, "--limit", "1")[0]["id"]
    found = pilot.json("task", task_id)
    assert found["state"] == "succeeded" and found["exit_code"] == 0
    assert found["error"] is None
    assert found["notes"] == ["artifact pattern 'out/*.pt' matched nothing"]
    assert [a["path"] for a in pilot.json("artifacts", task_id)] == ["logs/a.txt"]
    shown = pilot.ok("task", task_id).splitlines()
    assert any(line.split() == ["note", "artifact", "pattern", "'out/*.pt'", "matched",
                                "nothing"] for line in shown), shown
    inbox = [m["text"] for m in pilot.json("inbox", "--no-ack") if m["task"] == task_id]
    assert inbox == ["dragoon: artifact pattern 'out/*.pt' matched nothing"]


def test_a_task_whose_patterns_all_match_has_no_notes(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("run", drone, "--artifact", "a.txt", "--", "echo x > a.txt")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    task_id = pilot.json("tasks", "--drone", drone, "--limit", "1")[0]["id"]
    assert pilot.json("task", task_id)["notes"] == []
    assert not any(line.startswith("note") for line in pilot.ok("task", task_id).splitlines())


def test_a_refused_artifact_is_a_note_too(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("run", drone, "--artifact", "out/*", "--",
                     "mkdir -p out && ln -s /etc/hostname out/escape && echo ok > out/fine")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ("dragoon: artifact refused: out/escape: symlink leads out of the "
                           "work dir\n")
    task_id = pilot.json("tasks", "--drone", drone, "--limit", "1")[0]["id"]
    found = pilot.json("task", task_id)
    assert found["state"] == "succeeded"
    assert found["notes"] == ["artifact refused: out/escape: symlink leads out of the work dir"]
    assert [a["path"] for a in pilot.json("artifacts", task_id)] == ["out/fine"]
