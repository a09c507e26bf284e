"""Housekeeping on a timer: purge what expired, prune old events, mark silent drones offline
and tasks lost.

This is the only timed loop in the relay, and it does no dispatch: work
reaches drones through wake-ups (relay/signals.py), never through this loop.
Every ``gc_interval`` it also applies the retention (relay/retention.py) in a
worker thread, batch by batch, so neither the event loop nor the database
thread waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from dragoon.relay.context import Relay
from dragoon.relay.db import Connection, OperationalError, transaction

log = logging.getLogger("dragoon.relay")


def purge(conn: Connection, lockout_window: float) -> None:
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
    await prune_events(relay)
    await dispatch.sweep(relay)
    await drop_stale_stdin(relay)


async def drop_stale_stdin(relay: Relay) -> None:
    """The stdin a task will never read (cancelled while queued, expired) leaves the disk."""
    from dragoon.relay import stdin

    held = relay.stdin.held()
    if not held:
        return
    for task in await relay.db.run(stdin.ended, held):
        await relay.stdin.drop(task)


async def prune_events(relay: Relay) -> None:
    """Keep the event history bounded; a cockpit that reconnects from older is told to reset."""
    max_age = relay.config.events_max_age_seconds
    await relay.bus.store.prune(keep=relay.config.events_kept,
                                cutoff=None if max_age is None else time.time() - max_age)


ORPHAN_INTERVAL = 86400.0  # the walk over blobs/ for content no record names: daily


def storage_pass(relay: Relay, *, orphans: bool, stop: threading.Event) -> None:
    """Count an older relay's logs once, then prune what the retention says is due."""
    from dragoon.relay import quota, retention
    from dragoon.relay.stores import open_space

    counted = quota.backfill_logs(relay.db.call, relay.config.logs_dir)
    if counted is not None:
        log.info("counted %d bytes of logs kept by an older relay", counted)
    keep = relay.config.retention_seconds
    cutoff = None if keep is None else time.time() - keep
    with open_space(relay.config) as space:  # files, or rows on PostgreSQL
        report = retention.collect(
            relay.db.call, relay.config.logs_dir, relay.config.blobs_dir, cutoff=cutoff,
            orphans=orphans, should_stop=stop.is_set, space=space,
        )
    if report.tasks or report.fetches or report.orphan_files:
        log.info("retention: pruned %d tasks and %d fetches, %d orphan files; %d bytes freed",
                 report.tasks, report.fetches, report.orphan_files, report.bytes)


async def storage_loop(relay: Relay, stop: threading.Event) -> None:
    """Beside the sweeps, not inside them: a long first pass must not delay ``lost`` marks."""
    next_orphans = 0.0  # monotonic; due at start-up, as is the first pass
    while True:
        now = time.monotonic()
        orphans = now >= next_orphans
        if orphans:
            next_orphans = now + ORPHAN_INTERVAL
        try:
            await asyncio.to_thread(storage_pass, relay, orphans=orphans, stop=stop)
        except (OSError, *OperationalError) as exc:  # out of fds or disk: no traceback
            log.warning("retention pass failed: %s; next try in %g s", exc,
                        relay.config.gc_interval)
        except Exception:
            log.exception("retention pass failed")
        await asyncio.sleep(relay.config.gc_interval)


async def _until_next_sweep(relay: Relay) -> None:
    """``sweep_interval``, or less when a queued task's start deadline comes sooner; a
    submit with a deadline wakes this wait (dispatch.START_DEADLINES) to look again."""
    from dragoon.relay.dispatch import START_DEADLINES, next_start_deadline

    interval = relay.config.sweep_interval
    woken_at = time.monotonic()
    while True:
        since = relay.signals.version(START_DEADLINES)
        left = interval - (time.monotonic() - woken_at)
        deadline = await relay.db.run(next_start_deadline)
        if deadline is not None:
            left = min(left, deadline - time.time())
        if left <= 0 or relay.signals.closed:
            return
        if not await relay.signals.wait(START_DEADLINES, since, left):
            return  # the time is up (or the relay is stopping): sweep; woken: look again


async def run(relay: Relay) -> None:
    stop = threading.Event()
    storage = asyncio.create_task(storage_loop(relay, stop))
    try:
        while True:
            try:
                await sweep_once(relay)
            except (OSError, *OperationalError) as exc:  # out of fds or disk: one line
                log.warning("sweep failed: %s", exc)
            except Exception:
                log.exception("sweep failed")
            await _until_next_sweep(relay)
            if relay.signals.closed:
                return  # shutting down: every wait now returns at once, so this would spin
    finally:
        stop.set()  # a pass still in its thread ends after its current batch
        storage.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await storage
