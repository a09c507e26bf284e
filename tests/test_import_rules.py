"""The parts' import rules (docs/architecture.md), read from the sources: lazy and TYPE_CHECKING
imports count too.

shared/ imports none of the other parts; relay/, drone/ and cockpit/ import
shared/ and never each other; only dragoon/ (the entry point) names them all,
and it does so as strings loaded lazily. Inside cockpit/, the API client
imports neither the CLI nor the app.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.relay import REPO

PARTS = ("shared", "relay", "drone", "cockpit")


def imported_modules(path: Path) -> Iterator[str]:
    """Absolute module names a file imports anywhere in it (the project uses no relative ones)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            yield node.module or ""


def dragoon_parts_imported(folder: str) -> dict[str, set[str]]:
    """For each source file under ``folder``, the other dragoon parts it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        parts = {name.split(".")[1] for name in imported_modules(path)
                 if name.startswith("dragoon.") and name.count(".") >= 1}
        parts.discard(folder.split("/")[0])
        if parts:
            found[path.relative_to(REPO).as_posix()] = parts
    return found


def test_shared_imports_no_other_part() -> None:
    assert dragoon_parts_imported("shared") == {}


@pytest.mark.parametrize("part", ["relay", "drone", "cockpit"])
def test_a_part_imports_shared_only(part: str) -> None:
    others = {path: parts - {"shared"} for path, parts in dragoon_parts_imported(part).items()}
    assert {path: parts for path, parts in others.items() if parts} == {}


def test_the_entry_point_imports_no_part_at_import_time() -> None:
    assert {name for name in imported_modules(REPO / "dragoon" / "cli.py")
            if name.split(".")[:2] in ([["dragoon", part] for part in PARTS])} == set()


def test_the_pilot_client_imports_neither_the_cli_nor_the_app() -> None:
    rooms = {"dragoon.cockpit.cli", "dragoon.cockpit.app"}
    offending = {
        path.relative_to(REPO).as_posix(): name
        for path in sorted((REPO / "cockpit" / "client").rglob("*.py"))
        for name in imported_modules(path)
        if any(name == room or name.startswith(room + ".") for room in rooms)
    }
    assert offending == {}


def test_the_app_imports_no_cli_verb() -> None:
    offending = {
        path.relative_to(REPO).as_posix(): name
        for path in sorted((REPO / "cockpit" / "app").rglob("*.py"))
        for name in imported_modules(path)
        if name == "dragoon.cockpit.cli" or name.startswith("dragoon.cockpit.cli.")
    }
    assert offending == {}
