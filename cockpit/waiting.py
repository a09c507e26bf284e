"""A queued task's ``waiting`` object (docs/api.md) in words, for the CLI and the cockpit alike.

The relay says why a task has not started (relay/waiting.py); this turns its
object into one phrase with local clock times: ``drone box-1 offline since 14:02
(3m ago)``, ``drone box-1 draining``, ``drone box-1: 2/2 slots busy``, ``no drone
has labels gpu,a100``. The text quotes drone names and labels: callers pass it
through ``safe_text.clean`` like any other relay text.
"""

from __future__ import annotations

import time
from typing import Any

from dragoon.cockpit.formatting import relative_time

# Reasons that mean "on its way": nothing to tell the pilot.
HOPEFUL = frozenset({"dispatching"})


def key(waiting: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What must change for a follower to say it again: the reason and the drone, not the
    slot counts or the clock (a line per change, never a line per poll)."""
    if not waiting or waiting.get("reason") in HOPEFUL:
        return None
    return waiting.get("reason"), waiting.get("drone")


def _clock(when: float, now: float) -> str:
    local = time.localtime(when)
    fmt = "%H:%M" if now - when < 86400 else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, local)


def _drone_phrase(waiting: dict[str, Any], now: float) -> str:
    drone = waiting.get("drone")
    reason = waiting.get("reason")
    if reason == "offline":
        since = waiting.get("since")
        if since is None:
            return f"drone {drone} offline (never came online)"
        return f"drone {drone} offline since {_clock(since, now)} ({relative_time(since, now=now)})"
    if reason == "draining":
        return f"drone {drone} draining"
    if reason == "busy":
        return f"drone {drone}: {waiting.get('running')}/{waiting.get('slots')} slots busy"
    return f"drone {drone} {reason}"


def describe(waiting: dict[str, Any], *, now: float | None = None) -> str:
    """One phrase for why the task waits."""
    now = time.time() if now is None else now
    labels = ",".join(waiting.get("labels") or [])
    reason = waiting.get("reason")
    if reason == "no_match":
        return f"no drone has labels {labels}" if labels else (
            f"drone {waiting.get('drone')} is not enrolled")
    if reason in HOPEFUL:
        return "about to be handed to a drone"
    phrase = _drone_phrase(waiting, now)
    if not labels:
        return phrase
    count = int(waiting.get("candidates") or 0)
    if count > 1:
        return f"none of the {count} drones with labels {labels} is free (best: {phrase})"
    return f"labels {labels}: {phrase}"
