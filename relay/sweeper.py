"""Housekeeping on a timer: purge what expired, mark silent drones offline, tasks lost.

This is the only timed loop in the relay, and it does no dispatch: work
reaches drones through wake-ups (relay/signals.py), never through this loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

from dragoon.relay.context import Relay
from dragoon.relay.db import transaction

log = logging.getLogger("dragoon.relay")


def purge(conn: sqlite3.Connection, lockout_window: float) -> None:
    now = time.time()
    with transaction(conn):
        conn.execute("DELETE FROM nonces WHERE expires_at < ?", (now,))
        conn.execute("DELETE FROM challenges WHERE expires_at < ?", (now,))
        conn.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
        conn.execute("DELETE FROM enrollments WHERE expires_at < ?", (now,))
        conn.execute("DELETE FROM login_failures WHERE at < ?", (now - lockout_window,))


async def sweep_once(relay: Relay) -> None:
    from dragoon.relay import dispatch

    await relay.db.run(purge, relay.config.lockout_window)
    await dispatch.sweep(relay)


async def run(relay: Relay) -> None:
    while True:
        try:
            await sweep_once(relay)
        except Exception:
            log.exception("sweep failed")
        await asyncio.sleep(relay.config.sweep_interval)
