"""Why a queued task has not started: the relay's own answer, from what it knows of the fleet.

Only the relay knows every drone's liveness, drain, slots and labels, so it is
the one to say why a task waits; a pilot's CLI, the cockpit and ``dragoon task``
show the same ``waiting`` object (docs/api.md, "Task"). A task that targets one
drone waits on that drone; one that targets labels waits on the best of the
drones having them (a free one first, then a busy one, a draining one, an
offline one), and on none when no enrolled drone has them all.

The reasons, most hopeful first:

- ``dispatching``: a drone can take it now; it is on its way (nothing to say).
- ``busy``: online and not draining, but every slot is taken (``slots``/``running``).
- ``draining``: online but draining: it takes no new work until undrained.
- ``offline``: silent (``since``: last seen, or null if it never came online).
- ``no_match``: no enrolled drone has all the task's ``labels``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from dragoon.relay.db import Connection, Row

# The order a labels target picks its most hopeful candidate in.
_HOPE: Final = {"dispatching": 0, "busy": 1, "draining": 2, "offline": 3}


@dataclass(frozen=True)
class FleetSnapshot:
    """Every drone and its active task count, read once for a page of task views:
    two queries however many queued tasks the page holds."""

    drones: list[Row]
    running: dict[str, int]

    @classmethod
    def read(cls, conn: Connection) -> FleetSnapshot:
        running = dict(conn.execute(
            "SELECT drone, COUNT(*) FROM tasks WHERE state IN ('dispatched', 'running')"
            " GROUP BY drone").fetchall())
        return cls(conn.execute("SELECT * FROM drones ORDER BY name").fetchall(), running)

    def named(self, name: str) -> Row | None:
        return next((d for d in self.drones if d["name"] == name), None)


def _of_drone(fleet: FleetSnapshot, drone: Row) -> dict[str, Any]:
    """Why this drone does not take a task now (``dispatching`` when it would)."""
    running = fleet.running.get(drone["name"], 0)
    base = {"drone": drone["name"], "since": drone["last_seen"], "slots": drone["slots"],
            "running": running}
    if drone["state"] != "online":
        return {"reason": "offline", **base}
    if drone["draining"]:
        return {"reason": "draining", **base}
    if running >= drone["slots"]:
        return {"reason": "busy", **base}
    return {"reason": "dispatching", **base}


def of_task(conn: Connection, row: Row,
            fleet: FleetSnapshot | None = None) -> dict[str, Any] | None:
    """The ``waiting`` object of a queued task; ``None`` for a task in any other state.

    ``fleet`` is shared by the views of one listing; read here when not given.
    """
    if row["state"] != "queued":
        return None
    fleet = fleet or FleetSnapshot.read(conn)
    target = json.loads(row["target"])
    if "drone" in target:
        drone = fleet.named(target["drone"])
        if drone is None:  # removed after the submit
            return {"reason": "no_match", "drone": target["drone"], "labels": None}
        return _of_drone(fleet, drone)
    wanted = set(target.get("labels") or [])
    best: dict[str, Any] | None = None
    candidates = 0
    for drone in fleet.drones:
        if not wanted <= set(json.loads(drone["labels"])):
            continue
        candidates += 1
        found = _of_drone(fleet, drone)
        if best is None or _HOPE[found["reason"]] < _HOPE[best["reason"]]:
            best = found
    if best is None:
        return {"reason": "no_match", "drone": None, "labels": sorted(wanted), "candidates": 0}
    return {**best, "labels": sorted(wanted), "candidates": candidates}


def summary(waiting: dict[str, Any]) -> str:
    """One phrase for a relay-side message (a start deadline's error): no clock times."""
    reason = waiting.get("reason")
    drone = waiting.get("drone")
    labels = ",".join(waiting.get("labels") or [])
    if reason == "no_match":
        return f"no drone has labels {labels}" if labels else f"drone {drone} is not enrolled"
    if reason == "busy":
        return f"drone {drone} {waiting.get('running')}/{waiting.get('slots')} slots busy"
    if reason in ("offline", "draining"):
        return f"drone {drone} {reason}"
    return "no drone took it in time"


# A drone's change (online, offline, drain) changes why its queued tasks wait; their new views
# are published as task events so that a cockpit's lists stay true. Bounded: a fleet change
# must not flood the event history; tasks past this are seen anew at their own next change.
REPUBLISH_MAX: Final = 100


def queued_for(conn: Connection, name: str) -> list[str]:
    """Ids of the queued tasks a drone's change concerns: by its name or by labels it has."""
    drone = conn.execute("SELECT labels FROM drones WHERE name = ?", (name,)).fetchone()
    if drone is None:
        return []
    have = set(json.loads(drone["labels"]))
    found: list[str] = []
    for row in conn.execute(
        "SELECT id, drone, target FROM tasks WHERE state = 'queued' AND (drone = ? OR drone IS"
        " NULL) ORDER BY num LIMIT 1000", (name,),
    ):
        target = json.loads(row["target"])
        if row["drone"] == name or set(target.get("labels") or []) <= have:
            found.append(row["id"])
            if len(found) >= REPUBLISH_MAX:
                break
    return found
