"""No two different classes share a name across shared/, relay/, drone/, cockpit/ and dragoon/.

Two ``RelayClient`` classes (the pilot's API client and the drone's link) or
two ``Backoff`` classes doing different jobs make every import, traceback and
doc line ambiguous: every class name stands in one file only.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("shared", "relay", "drone", "cockpit", "dragoon")


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
    assert shared_names == {}


def test_the_drone_s_relay_link_and_back_off_have_names_of_their_own() -> None:
    homes = class_homes()
    for name in ("RelayLink", "JitteredBackoff", "Reachability"):
        assert homes[name] == ["drone/client.py"], name
    for name in ("RelayClient", "Backoff", "Link"):  # the pilot side's, defined once there
        assert len(homes[name]) == 1 and not homes[name][0].startswith("drone/"), name
