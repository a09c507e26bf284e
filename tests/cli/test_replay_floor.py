"""The pilot CLI keeps working across a relay restart that refuses what was signed before it.

The relay names its replay floor in the ``stale_timestamp`` answer; the
pilot's client signs again at it instead of failing the command (exit 0, no
error line). The floor is put a few seconds ahead of the clock, as a quick
restart makes it, so that the CLI's first request meets it.
"""

from __future__ import annotations

import sqlite3
import time

from tests.cli.conftest import Pilot
from tests.support.relay import RelayProcess, wait_until


def test_dragoon_run_right_after_a_relay_restart_succeeds(pilot: Pilot, drone: str,
                                                          relay: RelayProcess) -> None:
    relay.kill9()
    floor = int(time.time()) + 15
    conn = sqlite3.connect(relay.data_dir / "relay.db", isolation_level=None)
    try:
        conn.execute("UPDATE counters SET value = ? WHERE name = 'replay_floor'", (floor,))
    finally:
        conn.close()
    relay.start()
    try:
        done = pilot.cli("run", drone, "--", "echo hi")
        assert (done.returncode, done.stdout) == (0, "hi\n"), done.stderr
        assert "stale" not in done.stderr
    finally:
        # The session's other tests sign at their clock: leave the relay past its floor.
        wait_until(lambda: time.time() >= floor, timeout=30, interval=0.2,
                   message="the clock past the floor")
