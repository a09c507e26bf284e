"""The hostile-relay suite for issue 13, piece 2: a relay that can be stolen can't make a drone
run, re-run, redirect or change a task, nor start a cancel or a fetch no pilot asked for.

A real relay process and real drone processes; the test plays the thief. It edits the
relay's database under the running relay (the relay then hands out what it finds, signing
its envelope with its own key, as a stolen relay would), and signs with keys the thief
holds: the relay's own task key, a key of its own. Every attack must be refused by the
drone before anything runs (a marker file the forged command would make stays absent),
and the pilot sees the drone's reason on the task (``refused by drone NAME: …``) or the
fetch. ``dragoon drone revoke`` / ``authorize`` take effect without a restart.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared import orders
from dragoon.shared.canonical import spec_sha256
from dragoon.shared.signers import KeyFileSigner

from tests.drone.conftest import DroneProcess, Fleet
from tests.support.relay import REPO, new_signer, wait_until
from tests.support.sealing import DroneKeys, sealed_fields


@pytest.fixture
def fleet(shared_fleet: Fleet) -> Fleet:
    """The relay is never restarted here: one per module (see conftest)."""
    return shared_fleet


@pytest.fixture
def db(fleet: Fleet) -> Iterator[sqlite3.Connection]:
    """The thief's own connection to the running relay's database."""
    conn = sqlite3.connect(fleet.relay.data_dir / "relay.db", timeout=30,
                           isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def drain(fleet: Fleet, drone: str, on: bool) -> None:
    answer = fleet.pilot.post(f"/v1/workers/{fleet.name(drone)}/drain", json={"drain": on})
    assert answer.status_code == 200, answer.text


def queued(fleet: Fleet, drone: str, command: str) -> str:
    """A task the pilot really submitted, held in the queue (its drone drains)."""
    drain(fleet, drone, True)
    return fleet.submit(command, drone=drone)


def release(fleet: Fleet, drone: str) -> None:
    drain(fleet, drone, False)


def refused(fleet: Fleet, task_id: str, drone: str, reason: str) -> dict[str, Any]:
    """The task ended failed with the drone's refusal, which the pilot reads."""
    task = fleet.wait_state(task_id)
    assert task["state"] == "failed", task
    assert task["error"].startswith(f"refused by drone {fleet.name(drone)}: "), task["error"]
    assert reason in task["error"], task["error"]
    return task


def forge_order(signer: Any, *, target: dict[str, Any], spec: dict[str, Any], like: str,
                expires: int | None = None) -> tuple[str, str]:
    """An order over ``spec`` (the clear part) and the sealed payload the order ``like``
    signs, signed by ``signer``."""
    fields = orders.parse_order(like).fields
    order = orders.task_order(target=target, spec_sha256=spec_sha256(spec), expires=expires,
                              payload_sha256=fields["payload_sha256"],
                              recipients=fields["recipients"])
    signed = orders.sign_order(signer, order)
    return signed.order.text, signed.signature


def spec_of(db: sqlite3.Connection, task_id: str) -> dict[str, Any]:
    row = db.execute("SELECT spec FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return dict(json.loads(row["spec"]))


def order_of(db: sqlite3.Connection, task_id: str) -> str:
    row = db.execute("SELECT order_text FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return str(row["order_text"])


def set_order(db: sqlite3.Connection, task_id: str, text: str | None,
              signature: str | None) -> None:
    db.execute("UPDATE tasks SET order_text = ?, order_signature = ? WHERE id = ?",
               (text, signature, task_id))


# ----- forged tasks --------------------------------------------------------------------------


def test_a_task_with_no_order_is_refused_and_nothing_runs(fleet: Fleet, db: sqlite3.Connection,
                                                          tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    fleet.drone("d1")
    task_id = queued(fleet, "d1", f"touch {marker}")
    set_order(db, task_id, None, None)
    release(fleet, "d1")
    refused(fleet, task_id, "d1", "no order signed by a pilot")
    assert not marker.exists()


@pytest.mark.parametrize("thief", ["own key", "relay key"])
def test_an_order_signed_by_a_key_the_drone_does_not_authorize_is_refused(
        fleet: Fleet, db: sqlite3.Connection, tmp_path: Path, thief: str) -> None:
    marker = tmp_path / "pwned"
    drone = fleet.drone("d1")
    task_id = queued(fleet, "d1", "echo harmless")
    signer = (new_signer() if thief == "own key"
              else KeyFileSigner.from_file(fleet.relay.data_dir / "relay_key"))
    # The thief seals a task of its own to the drone's (public) key, and signs it.
    keys = DroneKeys.of(drone.data_dir)
    forged = sealed_fields({"command": f"touch {marker}", "grace": 10},
                           drone=fleet.name("d1"), keys=keys, signer=signer)
    db.execute("UPDATE tasks SET spec = ?, payload = ?, wraps = ? WHERE id = ?",
               (json.dumps(forged["spec"]), forged["payload"],
                json.dumps({keys.fingerprint: forged["wrap"]}), task_id))
    set_order(db, task_id, forged["order"], forged["order_signature"])
    release(fleet, "d1")
    refused(fleet, task_id, "d1", f"not signed by an authorized pilot (key "
                                  f"{signer.fingerprint})")
    assert not marker.exists()


@pytest.mark.parametrize("edit", ["clear spec", "payload", "wrap"])
def test_a_spec_edited_in_flight_is_refused(fleet: Fleet, db: sqlite3.Connection,
                                            tmp_path: Path, edit: str) -> None:
    """The relay re-signs its envelope over what it edited with its own key: not enough.
    Its own payload sealed to the drone, or its own task key wrapped to it, fail too."""
    marker = tmp_path / "pwned"
    drone = fleet.drone("d1")
    task_id = queued(fleet, "d1", "echo harmless")
    keys = DroneKeys.of(drone.data_dir)
    mine = sealed_fields({"command": f"touch {marker}", "grace": 10}, drone=fleet.name("d1"),
                         keys=keys, signer=new_signer())
    if edit == "clear spec":
        db.execute("UPDATE tasks SET spec = ? WHERE id = ?",
                   (json.dumps({**spec_of(db, task_id), "grace": 0}), task_id))
        reason = "the pilot signed"
    elif edit == "payload":
        db.execute("UPDATE tasks SET payload = ? WHERE id = ?", (mine["payload"], task_id))
        reason = "the task's payload is not the one its pilot signed"
    else:
        db.execute("UPDATE tasks SET wraps = ? WHERE id = ?",
                   (json.dumps({keys.fingerprint: mine["wrap"]}), task_id))
        reason = "the task's payload does not open under its task key"
    release(fleet, "d1")
    refused(fleet, task_id, "d1", reason)
    assert not marker.exists()


def test_an_order_for_one_drone_delivered_to_another_is_refused(
        fleet: Fleet, db: sqlite3.Connection, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    fleet.drone("d1", start=False)  # the pilot's drone: enrolled, never polling
    fleet.drone("d2")
    task_id = fleet.submit(f"touch {marker}", drone="d1")
    db.execute("UPDATE tasks SET drone = ?, target = ? WHERE id = ?",
               (fleet.name("d2"), json.dumps({"drone": fleet.name("d2")}), task_id))
    fleet.pilot.post(f"/v1/workers/{fleet.name('d2')}/drain", json={"drain": False})
    refused(fleet, task_id, "d2", f"order is for drone '{fleet.name('d1')}'")
    assert not marker.exists()


def test_a_signed_order_queued_again_as_a_new_task_is_refused(
        fleet: Fleet, db: sqlite3.Connection, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    drone = fleet.drone("d1")
    first = fleet.submit(f"echo run >> {counter}", drone="d1")
    assert fleet.wait_state(first)["state"] == "succeeded"
    assert counter.read_text() == "run\n"
    # Its task dir gone (the relay has it all), and the drone killed and started again: the
    # order's id must be remembered durably, not in the dir or in memory only.
    wait_until(lambda: not (drone.data_dir / "tasks" / first).exists(), timeout=20,
               message="the finished task's dir is removed")
    drone.kill9()
    drone.start()
    old = db.execute("SELECT spec, order_text, order_signature FROM tasks WHERE id = ?",
                     (first,)).fetchone()
    replay = queued(fleet, "d1", "echo placeholder")
    db.execute("UPDATE tasks SET spec = ?, order_text = ?, order_signature = ? WHERE id = ?",
               (old["spec"], old["order_text"], old["order_signature"], replay))
    release(fleet, "d1")
    refused(fleet, replay, "d1", "already used")
    assert counter.read_text() == "run\n"


def test_an_expired_order_is_refused(fleet: Fleet, db: sqlite3.Connection,
                                     tmp_path: Path) -> None:
    """Signed by the pilot, but long ago: the relay kept it back past its expiry."""
    marker = tmp_path / "late"
    fleet.drone("d1")
    task_id = queued(fleet, "d1", f"touch {marker}")
    text, signature = forge_order(fleet.pilot.signer, target={"drone": fleet.name("d1")},
                                  spec=spec_of(db, task_id), like=order_of(db, task_id),
                                  expires=int(time.time()) - orders.CLOCK_SKEW - 60)
    set_order(db, task_id, text, signature)
    release(fleet, "d1")
    refused(fleet, task_id, "d1", "expired")
    assert not marker.exists()


# ----- forged cancels and fetches ------------------------------------------------------------


def test_a_cancel_no_pilot_signed_is_refused_and_the_task_runs_on(
        fleet: Fleet, db: sqlite3.Connection, tmp_path: Path) -> None:
    done = tmp_path / "finished"
    fleet.drone("d1")
    task_id = fleet.submit(f"sleep 4; touch {done}", drone="d1")
    fleet.wait_state(task_id, "running")
    stranger = new_signer()
    forged = orders.sign_order(stranger, orders.cancel_order(
        target={"drone": fleet.name("d1")}, task=task_id,
        task_order_id=db.execute("SELECT order_id FROM tasks WHERE id = ?",
                                 (task_id,)).fetchone()[0], grace=0))
    db.execute("UPDATE tasks SET cancel_requested = 1, cancel_grace = 0, cancel_delivered = 0,"
               " cancel_order = ?, cancel_signature = ? WHERE id = ?",
               (forged.order.text, forged.signature, task_id))
    fleet.pilot.post(f"/v1/workers/{fleet.name('d1')}/drain", json={"drain": False})
    drone = fleet.drones[-1]
    wait_until(lambda: "cancel of task" in drone.log_text(), timeout=20,
               message="the drone logs the refused cancel")
    assert "not signed by an authorized pilot" in drone.log_text()
    # Told to the relay, which shows it on the task (an honest relay's pilot reads it).
    shown = wait_until(lambda: fleet.task(task_id)["cancel_refused"], timeout=20,
                       message="the refusal reaches the task's view")
    assert shown.startswith(f"refused by drone {fleet.name('d1')}: not signed by an "
                            f"authorized pilot (key {stranger.fingerprint})"), shown
    assert fleet.wait_state(task_id)["state"] == "succeeded"
    assert done.exists()


def test_the_pilots_own_cancel_is_obeyed(fleet: Fleet) -> None:
    fleet.drone("d1")
    task_id = fleet.submit("sleep 60", drone="d1")
    fleet.wait_state(task_id, "running")
    answer = fleet.pilot.post(f"/v1/tasks/{task_id}/cancel", json={"grace": 0})
    assert answer.status_code == 200, answer.text
    assert fleet.wait_state(task_id)["state"] == "cancelled"


def _fetch_result(fleet: Fleet, fetch_id: str) -> dict[str, Any]:
    return dict(wait_until(
        lambda: (f := fleet.pilot.get(f"/v1/fetches/{fetch_id}", params={"wait": 0}).json())
        and f["state"] != "pending" and f, timeout=20, message="fetch settled"))


def test_a_fetch_no_pilot_signed_is_refused(fleet: Fleet, db: sqlite3.Connection,
                                            tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "secret.txt").write_text("the key\n")
    (root / "public.txt").write_text("hello\n")
    fleet.drone("d1", fetch_roots=[str(root)])
    # One fetch with no order at all; one with the pilot's real order for another path.
    answer = fleet.pilot.post(f"/v1/workers/{fleet.name('d1')}/fetch",
                              json={"path": str(root / "public.txt")})
    assert answer.status_code in (200, 201), answer.text
    honest = answer.json()["id"]
    assert _fetch_result(fleet, honest)["state"] == "ready"
    signed = db.execute("SELECT order_text, order_signature, payload, wraps FROM fetches"
                        " WHERE id = ?", (honest,)).fetchone()
    now = time.time()
    # The second replays the honest fetch whole (order, sealed path, wraps) as a new fetch.
    for fetch_id, text, signature, payload, wraps in (
            ("f-forged0000000a", None, None, None, None),
            ("f-forged0000000b", *signed)):
        db.execute("INSERT INTO fetches (id, drone, pilot, state, created_at, order_text,"
                   " order_signature, payload, wraps) VALUES (?, ?, 'alice', 'pending', ?, ?,"
                   " ?, ?, ?)",
                   (fetch_id, fleet.name("d1"), now, text, signature, payload, wraps))
    fleet.pilot.post(f"/v1/workers/{fleet.name('d1')}/drain", json={"drain": False})
    no_order = _fetch_result(fleet, "f-forged0000000a")
    other_path = _fetch_result(fleet, "f-forged0000000b")
    assert no_order["state"] == "failed", no_order
    assert no_order["error"] == (f"refused by drone {fleet.name('d1')}: no order signed by a "
                                 "pilot came with it")
    assert other_path["state"] == "failed", other_path
    assert other_path["error"].startswith(f"refused by drone {fleet.name('d1')}: ")
    assert "already used" in other_path["error"]


# ----- the drone's own trust roots -----------------------------------------------------------


def _drone_cli(drone: DroneProcess, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "dragoon", "drone", *args, "--data",
                           str(drone.data_dir)], capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done


def test_revoke_and_authorize_take_effect_without_a_restart(fleet: Fleet,
                                                            tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    drone = fleet.drone("d1")
    first = fleet.submit("true", drone="d1")
    assert fleet.wait_state(first)["state"] == "succeeded"
    other = new_signer()  # another pilot stays authorized: the file is not left empty
    _drone_cli(drone, "authorize", other.public_key.openssh())
    _drone_cli(drone, "revoke", fleet.pilot.signer.fingerprint)
    task_id = fleet.submit(f"touch {marker}", drone="d1")
    refused(fleet, task_id, "d1", f"not signed by an authorized pilot (key "
                                  f"{fleet.pilot.signer.fingerprint})")
    assert not marker.exists()
    _drone_cli(drone, "authorize", str(fleet.pilot.key_path) + ".pub")  # type: ignore[attr-defined]
    again = fleet.submit(f"touch {marker}", drone="d1")
    assert fleet.wait_state(again)["state"] == "succeeded"
    assert marker.exists()


def test_a_drone_that_authorizes_no_pilot_runs_nothing_and_says_so(fleet: Fleet,
                                                                    tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    proc = DroneProcess(fleet.root / "drone-bare")
    proc.join(fleet.relay.enroll(fleet.name("bare"), authorize=()))
    proc.configure(poll_wait=5.0)
    fleet.drones.append(proc)
    proc.start()
    task_id = fleet.submit(f"touch {marker}", drone="bare")
    refused(fleet, task_id, "bare", "authorizes no pilot yet")
    assert "dragoon drone authorize" in fleet.task(task_id)["error"]
    assert "authorizes no pilot" in proc.log_text()
    assert not marker.exists()
