"""No two different classes share a name across shared/, relay/, drone/, cockpit/ and dragoon/.

Two ``RelayClient`` classes (the pilot's API client and the drone's link) or
two ``Backoff`` classes doing different jobs make every import, traceback and
doc line ambiguous. ``KNOWN`` lists the names still held twice when this test
was written, each waiting for its rename; a new duplicate fails.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parents[1]
PARTS: Final = ("shared", "relay", "drone", "cockpit", "dragoon")
KNOWN: Final = frozenset({
    "ApiError",    # relay/errors.py (raised by routes) and cockpit/client/_errors.py (the pilot's)
    "Drone",       # drone/daemon.py (the daemon) and cockpit/client/_types.py (a listing row)
    "DroneState",  # shared/models.py (the state enum) and drone/state.py (the drone's disk state)
    "Event",       # relay/events.py and cockpit/client/_types.py
    "Settings",    # drone/config.py and cockpit/client/config.py
    "Spec",        # relay/models.py, drone/verify.py, cockpit/client/_types.py
})


def class_homes() -> dict[str, list[str]]:
    homes: dict[str, list[str]] = defaultdict(list)
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            rel = path.relative_to(ROOT).as_posix()
            for name in {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}:
                homes[name].append(rel)
    return homes


def test_no_two_classes_share_a_name() -> None:
    shared_names = {name: where for name, where in class_homes().items() if len(where) > 1}
    assert {n: w for n, w in shared_names.items() if n not in KNOWN} == {}


def test_the_drone_s_relay_link_and_back_off_have_names_of_their_own() -> None:
    homes = class_homes()
    for name in ("RelayLink", "JitteredBackoff", "Reachability"):
        assert homes[name] == ["drone/client.py"], name
    for name in ("RelayClient", "Backoff", "Link"):  # the pilot side's, defined once there
        assert len(homes[name]) == 1 and not homes[name][0].startswith("drone/"), name
