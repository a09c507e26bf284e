"""Retention: old finished tasks lose their output and keep their record; nothing else moves.

A real relay serves throughout; ``dragoon relay gc`` runs beside it as the
admin would, and the relay's own sweeper applies the same rules on its timer.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.relay_ops.promtext import Family, parse
from tests.support.relay import (
    DroneClient,
    PilotSession,
    RelayProcess,
    dragoon,
    init_relay,
    relay_db,
    wait_until,
)
from tests.support.stored import age_blobs as stored_age_blobs
from tests.support.stored import (
    blob_stored,
    log_held,
    plant_blob,
    plant_stale_upload,
)

DAY = 86400.0
OLD = time.time() - 40 * DAY
SHARED = b"shared weights " * 100  # an artifact of the old task and of the young one
OWN = b"the old task's own artifact " * 50
FETCHED = b"a,b\n1,2\n" * 30


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_kept(relay: RelayProcess, data: bytes) -> bool:
    """Whether the relay still stores this content (a file, or rows on PostgreSQL)."""
    return blob_stored(relay.data_dir, sha(data))


def log_kept(relay: RelayProcess, task: str) -> bool:
    return log_held(relay.data_dir, task)


def age_blobs(relay: RelayProcess) -> None:
    """Blobs written seconds ago are in retention's grace; these are meant to be old."""
    stored_age_blobs(relay.data_dir, OLD)


def sql(relay: RelayProcess, statement: str, *args: Any) -> list[Any]:
    """Set a row's age the way only time could: beside the serving relay, as gc does."""
    with relay_db(relay.data_dir) as conn:
        cursor = conn.execute(statement, args)
        return list(cursor.fetchall()) if cursor.description else []


def gc(relay: RelayProcess, *args: str) -> dict[str, Any]:
    out = dragoon("relay", "gc", "--data", str(relay.data_dir), "--json", *args).stdout
    result: dict[str, Any] = json.loads(out)
    return result


@dataclass
class Fleet:
    old: str
    young: str
    running: str
    queued: str
    fetch: str
    old_out: bytes
    young_out: bytes
    running_out: bytes


def run_task(pilot: PilotSession, drone: DroneClient, output: bytes, *,
             artifacts: dict[str, bytes], finished_at: float | None) -> str:
    task = str(pilot.submit("make", drone=drone.name)["id"])
    assert any(t["id"] == task for t in drone.poll().json()["tasks"])
    assert drone.log(task, "stdout", 0, output).status_code == 200
    for path, data in artifacts.items():
        assert drone.blob(data, task=task, path=path).status_code == 200
    assert drone.message(task, 0, f"hello from {task}").status_code == 200
    if finished_at is not None:
        done = drone.finish(task, finished_at=finished_at, stdout_size=len(output))
        assert done.status_code == 200, done.text
    return task


def populate(relay: RelayProcess, pilot: PilotSession) -> Fleet:
    """An old finished task, a young one sharing its artifact, an old running one, a queued
    one, and an old fetch; every one of them with bytes on disk."""
    drone = relay.drone("gpu-1", slots=4, pilot=pilot)
    idle = relay.drone("idle-1", pilot=pilot)  # never polls: its task stays queued
    old_out, young_out, running_out = b"old output\n" * 40, b"young output\n" * 30, b"run\n" * 9
    old = run_task(pilot, drone, old_out, artifacts={"shared.bin": SHARED, "own.bin": OWN},
                   finished_at=OLD)
    young = run_task(pilot, drone, young_out, artifacts={"shared.bin": SHARED},
                     finished_at=None)
    assert drone.finish(young, stdout_size=len(young_out)).status_code == 200
    running = run_task(pilot, drone, running_out, artifacts={}, finished_at=None)
    sql(relay, "UPDATE tasks SET created_at = ?, dispatched_at = ?, started_at = ? WHERE id = ?",
        OLD, OLD, OLD, running)
    queued = str(pilot.submit("wait", drone=idle.name)["id"])
    sql(relay, "UPDATE tasks SET created_at = ? WHERE id = ?", OLD, queued)
    fetch = pilot.post(f"/v1/workers/{drone.name}/fetch", json={"path": "/data/m.csv"}).json()
    drone.poll()
    assert drone.blob(FETCHED, fetch=fetch["id"]).status_code == 200
    sql(relay, "UPDATE fetches SET created_at = ? WHERE id = ?", OLD, fetch["id"])
    age_blobs(relay)
    return Fleet(old, young, running, queued, fetch["id"], old_out, young_out, running_out)


def stored(relay: RelayProcess) -> dict[str, int]:
    return {r["drone"]: r["bytes"] for r in sql(relay, "SELECT * FROM storage")}


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[RelayProcess, PilotSession]]:
    # retention "none": only the gc command below prunes, so the test says when.
    config = {"sweep_interval": 0.2, "retention": "none"}
    with RelayProcess(tmp_path / "relay", config=config) as relay:
        yield relay, relay.pilot("alice")


def test_gc_prunes_old_output_keeps_records_young_running_queued_and_shared_blobs(
    serving: tuple[RelayProcess, PilotSession],
) -> None:
    relay, pilot = serving
    fleet = populate(relay, pilot)
    before = stored(relay)["gpu-1"]
    assert before == (len(fleet.old_out) + len(fleet.young_out) + len(fleet.running_out)
                      + 2 * len(SHARED) + len(OWN) + len(FETCHED))

    plan = gc(relay, "--dry-run", "--older-than", "30d")
    expected = {"tasks": 1, "log_files": 1, "log_bytes": len(fleet.old_out), "artifacts": 2,
                "messages": 1, "fetches": 1, "blobs": 2, "blob_bytes": len(OWN) + len(FETCHED),
                "shared_blobs": 1}
    assert {k: plan[k] for k in expected} == expected
    assert plan["tombstones"] == [fleet.old]
    assert log_kept(relay, fleet.old) and blob_kept(relay, OWN)
    assert stored(relay)["gpu-1"] == before  # a dry run changes nothing

    done = gc(relay, "--older-than", "30d")
    assert {k: done[k] for k in expected} == expected
    assert done["storage"]["reclaimed_bytes"] == len(fleet.old_out) + len(OWN) + len(FETCHED)

    # The old task: a tombstone with its state, times and exit code; its output is gone.
    tomb = pilot.get(f"/v1/tasks/{fleet.old}").json()
    assert (tomb["state"], tomb["exit_code"], tomb["finished_at"]) == ("succeeded", 0, OLD)
    assert tomb["stdout_size"] == 0 and not log_kept(relay, fleet.old)
    assert pilot.get(f"/v1/tasks/{fleet.old}/artifact").json()["artifacts"] == []
    assert not blob_kept(relay, OWN) and not blob_kept(relay, FETCHED)
    assert pilot.get(f"/v1/fetches/{fleet.fetch}").status_code == 404
    inbox = {m["task"] for m in pilot.get("/v1/messages").json()["messages"]}
    assert inbox == {fleet.young, fleet.running}

    # Everything else is as it was: the young task (with the shared blob), the old but
    # still running task, the old but still queued one.
    young = pilot.get(f"/v1/tasks/{fleet.young}/log", params={"stream": "stdout"})
    assert young.content == fleet.young_out
    shared = pilot.get(f"/v1/tasks/{fleet.young}/artifact", params={"path": "shared.bin"})
    assert shared.content == SHARED
    running = pilot.get(f"/v1/tasks/{fleet.running}/log", params={"stream": "stdout"})
    assert running.content == fleet.running_out
    states = {t: pilot.get(f"/v1/tasks/{t}").json()["state"] for t in (fleet.running,
                                                                     fleet.queued)}
    assert states == {fleet.running: "dispatched", fleet.queued: "queued"}
    assert stored(relay)["gpu-1"] == (len(fleet.young_out) + len(fleet.running_out)
                                      + len(SHARED))

    again = gc(relay, "--older-than", "30d")
    assert (again["tasks"], again["bytes"]) == (0, 0)


def test_gc_with_a_younger_cutoff_takes_the_young_task_too(
    serving: tuple[RelayProcess, PilotSession],
) -> None:
    relay, pilot = serving
    fleet = populate(relay, pilot)
    gc(relay, "--older-than", "30d")
    sql(relay, "UPDATE tasks SET finished_at = ? WHERE id = ?", time.time() - 3600, fleet.young)
    done = gc(relay, "--older-than", "1m")
    assert done["tombstones"] == [fleet.young]
    assert not blob_kept(relay, SHARED)  # its last reference went with the young task
    assert pilot.get(f"/v1/tasks/{fleet.running}").json()["state"] == "dispatched"
    assert stored(relay)["gpu-1"] == len(fleet.running_out)


def test_the_relay_applies_its_retention_on_its_own(tmp_path: Path) -> None:
    config = {"sweep_interval": 0.2, "retention": "none"}
    with RelayProcess(tmp_path / "relay", config=config) as relay:
        pilot = relay.pilot("alice")
        fleet = populate(relay, pilot)
        relay.stop()
        init_relay(relay.data_dir, config={**config, "retention": "30d", "gc_interval": 0.3})
        relay.start()
        wait_until(lambda: not log_kept(relay, fleet.old), timeout=20,
                   message="old output pruned by the sweeper")
        wait_until(lambda: not blob_kept(relay, OWN), timeout=20,
                   message="the old task's own blob deleted")
        assert blob_kept(relay, SHARED)
        assert log_kept(relay, fleet.young) and log_kept(relay, fleet.running)
        pilot.reconnect()
        assert pilot.get(f"/v1/tasks/{fleet.old}").json()["state"] == "succeeded"
        pruned = sql(relay, "SELECT id FROM tasks WHERE pruned_at IS NOT NULL")
        assert [r["id"] for r in pruned] == [fleet.old]


def test_a_pruned_task_takes_no_more_output(serving: tuple[RelayProcess, PilotSession]) -> None:
    relay, pilot = serving
    drone = relay.drone("late-1", pilot=pilot)
    task = run_task(pilot, drone, b"x\n", artifacts={}, finished_at=OLD)
    gc(relay, "--older-than", "30d")
    late = drone.log(task, "stdout", 2, b"more\n")
    # Finished is final: the pruned task's log stays closed, and no folder comes back.
    assert (late.status_code, late.json()["error"]) == (409, "task_finished")
    assert not log_kept(relay, task)


def test_orphan_blobs_and_abandoned_uploads_are_collected_after_their_grace(
    serving: tuple[RelayProcess, PilotSession],
) -> None:
    relay, _pilot = serving
    plant_blob(relay.data_dir, b"nobody", OLD)
    plant_blob(relay.data_dir, b"just now")  # may be an upload about to be recorded: left alone
    stale_upload = plant_stale_upload(relay.data_dir, b"half an upl", OLD)
    # On PostgreSQL an upload cut short leaves nothing: its rows were never committed.
    expected = (2, 6 + 11) if stale_upload is not None else (1, 6)
    plan = gc(relay, "--dry-run")
    assert (plan["orphan_files"], plan["orphan_bytes"]) == expected
    assert blob_kept(relay, b"nobody")
    done = gc(relay)
    assert (done["orphan_files"], done["orphan_bytes"]) == expected
    assert not blob_kept(relay, b"nobody") and blob_kept(relay, b"just now")
    assert stale_upload is None or not stale_upload.exists()


def test_bad_retention_setting_or_flag_is_one_clear_line(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay", config={"retention": "a month"})
    for verb in (["gc"], ["serve", "--bind", "127.0.0.1:0"]):
        answer = dragoon("relay", *verb, "--data", str(relay.data_dir), check=False)
        assert answer.returncode == 1
        [line] = answer.stderr.strip().splitlines()
        assert line.startswith(
            "dragoon relay: relay.toml: retention: 'a month' is not a duration like ")
    good = RelayProcess(tmp_path / "good")
    flag = dragoon("relay", "gc", "--data", str(good.data_dir), "--older-than", "3x",
                   check=False)
    assert flag.returncode == 1
    [line] = flag.stderr.strip().splitlines()
    assert line.startswith("dragoon relay: --older-than: '3x' is not a duration like ")


def test_relay_help_lists_the_storage_verbs() -> None:
    listed = dragoon("relay", "--help").stdout
    assert all(verb in listed for verb in ("gc", "backup", "restore"))


def test_metrics_show_bytes_stored_per_drone_and_bytes_reclaimed(
    serving: tuple[RelayProcess, PilotSession],
) -> None:
    relay, pilot = serving
    drone = relay.drone("gpu-1", pilot=pilot)
    output = b"kept for a while\n" * 100
    run_task(pilot, drone, output, artifacts={"own.bin": OWN}, finished_at=OLD)

    def scraped() -> dict[str, Family]:
        answer = httpx.get(f"{relay.url}/metrics")
        assert answer.status_code == 200, answer.text
        return parse(answer.text)

    before = scraped()
    held = len(output) + len(OWN)
    assert before["dragoon_relay_storage_bytes"].value("", drone="gpu-1") == held
    assert before["dragoon_relay_storage_reclaimed_bytes_total"].value() == 0
    report = gc(relay, "--older-than", "30d")
    after = scraped()
    assert after["dragoon_relay_storage_bytes"].value("", drone="gpu-1") == 0
    reclaimed = after["dragoon_relay_storage_reclaimed_bytes_total"].value()
    # The blob waits out its grace after its last touch (docs/operations.md): logs only here.
    assert reclaimed == report["bytes"] >= len(output)
