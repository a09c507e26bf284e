"""Task ids by a unique prefix, on every verb that takes a TASK; and list filters naming nothing.

``t-4jg`` (or ``4jg``) stands for the one task whose id starts so; none is
exit 4 (not found), several is exit 2 (the pilot must type more), and text
that cannot start any id is exit 2 before a request is sent. Against the
session's real relay and drone, and a relay of its own where two ids are made
to share a prefix (random ids rarely do).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Pilot, ghost_drone, make_pilot
from tests.support.relay import RelayProcess


def one_line(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dragoon: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


def test_every_task_verb_takes_a_unique_prefix(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("run", drone, "--", "echo by-prefix")
    assert done.returncode == 0, done.stderr
    task_id = pilot.json("tasks", "--drone", drone, "--limit", "1")[0]["id"]
    prefix = task_id[:7]  # t- and five: unique among a few hundred tasks
    for typed in (prefix, prefix[2:], prefix.upper()):
        assert pilot.json("task", typed)["id"] == task_id, typed
    shown = pilot.ok("task", prefix)
    assert f"id           {task_id}" in shown or task_id in shown.splitlines()[0]
    assert pilot.ok("logs", prefix) == "by-prefix\n"
    assert pilot.ok("logs", "-f", prefix[2:]) == "by-prefix\n"
    assert pilot.json("artifacts", prefix) == []
    assert pilot.ok("cancel", prefix).strip() == f"{task_id} is already succeeded"
    missing = pilot.cli("artifact", prefix, "no/such.file")
    assert missing.returncode == 4
    one_line(missing.stderr, task_id, "no/such.file")  # the whole id, resolved


@pytest.mark.parametrize("typed", ["t-0o1", "t-ab", "ab", "t-", "t-abcdefghijk", "t-a/b"])
def test_text_that_starts_no_id_is_a_usage_error_before_any_request(pilot: Pilot,
                                                                    typed: str) -> None:
    for verb in (["task"], ["logs"], ["cancel"], ["artifacts"], ["artifact"]):
        args = [*verb, typed] + (["x"] if verb == ["artifact"] else [])
        done = pilot.cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "is not a task id or a prefix of one" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_tasks_of_a_drone_nobody_has_is_exit_4(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("tasks", "--drone", "nosuch")
    assert done.returncode == 4, done.stderr
    one_line(done.stderr, "no such drone", "nosuch")
    assert done.stdout == ""
    bad = pilot.cli("tasks", "--drone", "no/such")
    assert bad.returncode == 2 and "is not a name" in bad.stderr
    assert pilot.json("tasks", "--drone", drone, "--state", "succeeded", "--limit", "1")
    unknown_state = pilot.cli("tasks", "--state", "done")
    assert unknown_state.returncode == 2


@pytest.fixture(scope="module")
def own_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelayProcess, Pilot]]:
    """A relay whose only tasks are this module's: three queued, two ids sharing a prefix."""
    root = tmp_path_factory.mktemp("prefix-relay")
    with RelayProcess(root / "relay") as relay:
        pilot = make_pilot(relay, root, "carol")
        pilot.login()
        ghost_drone(relay, root, pilot, "ghost", ("nowhere",))
        ids = [pilot.ok("submit", "--labels", "nowhere", "--", f"echo {n}").strip()
               for n in range(3)]
        relay.stop()
        # Random ids share a prefix only by chance: two are given one, as chance would.
        with sqlite3.connect(relay.data_dir / "relay.db") as db:
            db.execute("UPDATE tasks SET id = 't-aaaab22222' WHERE id = ?", (ids[0],))
            db.execute("UPDATE tasks SET id = 't-aaaac33333' WHERE id = ?", (ids[1],))
        db.close()
        relay.start()
        yield relay, pilot
        relay.kill9()


def test_a_shared_prefix_is_ambiguous_and_names_the_candidates(
        own_relay: tuple[RelayProcess, Pilot]) -> None:
    _, pilot = own_relay
    for verb in ("task", "logs", "cancel", "artifacts"):
        done = pilot.cli(verb, "t-aaaa")
        assert done.returncode == 2, (verb, done.stderr)
        one_line(done.stderr, "ambiguous: t-aaaa matches", "t-aaaac33333", "t-aaaab22222")
    assert pilot.json("task", "t-aaaab22222")["spec"]["command"] == "echo 0"  # whole ids
    assert pilot.json("task", "aaaac33333")["spec"]["command"] == "echo 1"
    assert pilot.json("task", "t-aaaab")["id"] == "t-aaaab22222"  # unique once longer


def test_a_prefix_no_task_has_is_exit_4(own_relay: tuple[RelayProcess, Pilot]) -> None:
    _, pilot = own_relay
    for verb in ("task", "logs", "cancel", "artifacts"):
        done = pilot.cli(verb, "t-aab")
        assert done.returncode == 4, (verb, done.stderr)
        one_line(done.stderr, "no task matches t-aab")
    whole = pilot.cli("task", "t-aaaad44444")
    assert whole.returncode == 4
    one_line(whole.stderr, "t-aaaad44444")


def test_the_relay_holds_the_prefix_to_the_same_rule(
        own_relay: tuple[RelayProcess, Pilot], tmp_path: Path) -> None:
    relay, _ = own_relay
    session = relay.pilot("dave")
    found = session.get("/v1/tasks", params={"id_prefix": "aaaa"})
    assert found.status_code == 200, found.text
    assert [t["id"] for t in found.json()["tasks"]] == ["t-aaaac33333", "t-aaaab22222"]
    for bad in ("t-a", "t-a%", "t-a_", "t-0oo"):
        refused = session.get("/v1/tasks", params={"id_prefix": bad})
        assert refused.status_code == 422, (bad, refused.text)
        assert "is not a task id or a prefix of one" in refused.json()["detail"]
    unknown = session.get("/v1/tasks", params={"drone": "nosuch"})
    assert unknown.status_code == 404 and unknown.json()["detail"] == "no such drone"
