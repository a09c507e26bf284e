"""Held requests (log follows, fetch and inbox waits, drone polls) that end with their caller.

A request held for up to ``poll_max_wait`` was let in by a pilot's session that
may be revoked, replaced or expire meanwhile, or by a drone key that a new
enrollment of the same name may replace; without a second look it would go on
to answer with whatever arrived after (a task's spec, to a key that no longer
speaks for the drone). ``wait`` is ``Signals.wait`` cut into slices of
``session_recheck`` seconds, with the caller checked after each slice and after
every wake-up, before anything is answered.

A drone's poll passes None: ``dispatch.assign`` checks the poll's key still
holds the drone's name on every pass, inside the transaction that would hand
work out, so an idle poll costs the database nothing extra.
"""

from __future__ import annotations

import time
from collections.abc import Hashable

from dragoon.relay.auth import PilotPrincipal, require_session
from dragoon.relay.context import Relay


async def wait(relay: Relay, who: PilotPrincipal | None, key: Hashable, since: int,
               timeout: float, *, caller_rechecks: bool = False) -> bool:
    """Like ``relay.signals.wait``; raises 401 once ``who``'s session is gone (None: never).

    ``caller_rechecks``: on a wake-up (True returned) the session is not checked
    here, because the caller's very next database call checks it, in the same
    call as its own reads and before anything is answered (``auth.check_session``);
    one hop to the database thread per wake-up instead of two. A slice that ends
    without a wake-up is still checked here.
    """
    if who is None:
        return await relay.signals.wait(key, since, timeout)
    deadline = time.monotonic() + timeout
    while True:
        step = min(deadline - time.monotonic(), relay.config.session_recheck)
        moved = await relay.signals.wait(key, since, step)
        if relay.signals.closed:
            return False  # shutting down: answer what there is, as before
        if moved and caller_rechecks:
            return True
        await require_session(relay, who)
        if moved or time.monotonic() >= deadline:
            return moved
