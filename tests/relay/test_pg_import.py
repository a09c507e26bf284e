"""``dragoon relay migrate --from DATA_DIR --to postgresql://…``: a SQLite relay's state moved.

A real relay on SQLite gets a pilot, a drone, a finished task with output and an artifact,
a running task with half its output, a queued task and an inbox message; it is stopped,
moved into a fresh PostgreSQL database by the CLI, and started again on the same data
dir, now on PostgreSQL. The pilot's session token and the drone's key work as they were,
every byte acknowledged before is there, the running task's drone goes on from the
acknowledged offset, the queued task is handed out, and new ids follow the old ones.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import pg
from tests.support.relay import RelayProcess, dragoon


@pytest.fixture
def database() -> Iterator[str]:
    url = pg.new_database("dragoon_import")
    try:
        yield url
    finally:
        pg.drop_database(url)


def test_a_sqlite_relay_moved_to_postgresql_goes_on_with_the_same_keys_and_bytes(
    tmp_path: Path, database: str,
) -> None:
    with RelayProcess(tmp_path / "relay", backend="sqlite",
                      config={"sweep_interval": 0.2}) as relay:
        pilot = relay.pilot("alice")
        drone = relay.drone("box-1", ["gpu"], slots=3, pilot=pilot)
        done = pilot.submit("echo done", drone="box-1")["id"]
        running = pilot.submit("train", drone="box-1")["id"]
        drone.poll(slots=3)
        drone.poll(running=[done, running], started=[{"id": done}, {"id": running}])
        assert drone.log(done, "stdout", 0, b"all of it\n").status_code == 200
        weights = bytes(range(256)) * 50
        assert drone.blob(weights, task=done, path="out/w.bin").status_code == 200
        assert drone.message(done, 0, "loss=0.5").status_code == 200
        assert drone.finish(done, exit_code=0).status_code == 200
        assert drone.log(running, "stdout", 0, b"epoch 1\n").json() == {"next_offset": 8}
        queued = pilot.submit("later", drone="box-1", labels=None)["id"]
        old_tasks = {t["id"]: t for t in pilot.get("/v1/tasks").json()["tasks"]}
        relay.stop()

        moved = dragoon("relay", "migrate", "--from", str(relay.data_dir), "--to", database,
                        check=False)
        assert moved.returncode == 0, moved.stderr
        assert "task logs" in moved.stdout and "relay.toml now uses" in moved.stdout
        assert "database = " in (relay.data_dir / "relay.toml").read_text()
        with sqlite3.connect(relay.data_dir / "relay.db") as old:  # the source is untouched
            assert old.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 3

        relay.start()  # the same data dir, now on PostgreSQL
        tasks = {t["id"]: t for t in pilot.get("/v1/tasks").json()["tasks"]}  # same token
        assert set(tasks) == set(old_tasks)
        assert tasks[done]["state"] == "succeeded" and tasks[done]["exit_code"] == 0
        assert pilot.get(f"/v1/tasks/{done}/log").content == b"all of it\n"
        got = pilot.get(f"/v1/tasks/{done}/artifact", params={"path": "out/w.bin"})
        assert got.content == weights
        assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(weights).hexdigest()
        assert [m["task"] for m in pilot.inbox()] == [done]
        # The drone, with its own key, goes on: the rest of the running task's output from
        # the acknowledged offset, a resend acknowledged, the queued task handed out.
        assert drone.log(running, "stdout", 0, b"epoch 1\n").json() == {"next_offset": 8}
        assert drone.log(running, "stdout", 8, b"epoch 2\n").json() == {"next_offset": 16}
        handed = drone.poll(running=[running]).json()["tasks"]
        assert [t["id"] for t in handed] == [queued]
        assert pilot.get(f"/v1/tasks/{running}/log").content == b"epoch 1\nepoch 2\n"
        # New rows continue the old sequences: a new task's number is above every old one.
        newer = pilot.submit("next", drone="box-1")
        assert newer["id"] not in tasks
        import psycopg

        with psycopg.connect(database) as conn:  # it is PostgreSQL that holds them now
            nums = dict(conn.execute("SELECT id, num FROM tasks").fetchall())
        assert set(nums) == {*tasks, newer["id"]}
        assert nums[newer["id"]] > max(nums[t] for t in tasks)
        refused = dragoon("relay", "migrate", "--from", str(relay.data_dir), "--to", database,
                          check=False)
        assert refused.returncode != 0 and "already uses" in refused.stderr


def test_a_database_that_holds_a_relay_already_is_refused_and_left_alone(
    tmp_path: Path, database: str,
) -> None:
    with RelayProcess(tmp_path / "on-pg", backend="sqlite") as first:
        first.pilot("bob")
        first.stop()
        assert dragoon("relay", "migrate", "--from", str(first.data_dir), "--to",
                       database).returncode == 0
    with RelayProcess(tmp_path / "other", backend="sqlite") as second:
        second.pilot("carol")
        second.stop()
        again = dragoon("relay", "migrate", "--from", str(second.data_dir), "--to", database,
                        check=False)
        assert again.returncode != 0 and "already holds a relay's data" in again.stderr
        assert "database = " not in (second.data_dir / "relay.toml").read_text() or \
            'database = ""' in (second.data_dir / "relay.toml").read_text()
    bad = dragoon("relay", "migrate", "--from", str(tmp_path / "other"), "--to",
                  "mysql://x", check=False)
    assert bad.returncode != 0 and "not a postgresql:// URL" in bad.stderr
