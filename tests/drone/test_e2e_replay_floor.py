"""A real drone keeps working across a relay restart that refuses what was signed before it.

After a restart the relay refuses every request signed below its replay floor
(relay/replay.py) and names the floor; the drone signs again at it on its own.
The floor is put 50 s ahead of the clock here, as a quick restart (or a drone
whose clock runs behind) makes it, so that every request the drone had signed
at its own clock meets it.
"""

from __future__ import annotations

import sqlite3
import time

from tests.drone.conftest import Fleet


def test_a_drone_finishes_and_takes_tasks_across_a_relay_restart_with_a_floor_ahead(
    fleet: Fleet,
) -> None:
    drone = fleet.drone("d1")
    running = fleet.submit("sleep 1.5; echo across", drone="d1")
    fleet.wait_state(running, "running")
    fleet.relay.kill9()
    floor = int(time.time()) + 50
    conn = sqlite3.connect(fleet.relay.data_dir / "relay.db", isolation_level=None)
    try:
        conn.execute("UPDATE counters SET value = ? WHERE name = 'replay_floor'", (floor,))
    finally:
        conn.close()
    fleet.relay.start()
    pilot = fleet.pilot
    signed_now = pilot.http.get("/v1/workers", headers=pilot.signed_headers("GET", "/v1/workers"))
    assert (signed_now.status_code, signed_now.json()["not_before"]) == (401, floor)
    assert fleet.wait_state(running, timeout=60)["state"] == "succeeded"
    assert fleet.output(running) == b"across\n"
    after = fleet.submit("echo after", drone="d1")
    assert fleet.wait_state(after, timeout=60)["state"] == "succeeded"
    assert fleet.output(after) == b"after\n"
    assert "stale_timestamp" not in drone.log_text()  # signed again at once, never backed off
