"""The pilot side's rooms stay apart: read from the sources, so even TYPE_CHECKING imports count.

Screens and widgets post messages to the app and never import it (no
app ↔ screens cycle); the CLI tables never import the Textual app; the
shared colour scheme and formatting helpers import neither rich nor Textual.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support.relay import REPO

COCKPIT = REPO / "cockpit"
APPLICATION = "dragoon.cockpit.app.application"


def package_of(path: Path) -> str:
    """The dotted package a source file under cockpit/ belongs to, as installed."""
    parts = path.relative_to(COCKPIT).parent.parts
    return ".".join(("dragoon", "cockpit", *parts))


def imports_of(path: Path, *, package: str | None = None,
               top_level_only: bool = False) -> Iterator[str]:
    """Every module `path` imports (relative imports resolved), also under TYPE_CHECKING.

    With `top_level_only`, imports inside functions (lazy ones) are left out.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = package or package_of(path)
    nodes = _outside_functions(tree) if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _outside_functions(node: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        yield child
        yield from _outside_functions(child)


def sources(*folders: str) -> list[Path]:
    found = [p for folder in folders for p in sorted((COCKPIT / folder).rglob("*.py"))]
    assert found, folders
    return found


def test_no_screen_widget_or_palette_imports_the_app() -> None:
    files = [*sources("app/screens", "app/widgets"), COCKPIT / "app" / "palette.py",
             COCKPIT / "app" / "messages.py", COCKPIT / "app" / "state.py"]
    offenders = {str(p.relative_to(REPO)): name for p in files for name in imports_of(p)
                 if name == APPLICATION or name.startswith(APPLICATION + ".")}
    assert offenders == {}


def test_the_cli_imports_the_app_only_lazily_in_the_cockpit_verb() -> None:
    eager = {str(p.relative_to(REPO)): name for p in sources("cli")
             for name in imports_of(p, top_level_only=True)
             if name.startswith("dragoon.cockpit.app")}
    assert eager == {}
    anywhere = {p.name for p in sources("cli") for name in imports_of(p)
                if name.startswith("dragoon.cockpit.app")}
    assert anywhere <= {"tui.py"}  # `dragoon cockpit` launches it; the demo runs that verb


def test_theme_and_formatting_import_neither_rich_nor_textual() -> None:
    for path in (COCKPIT / "theme.py", COCKPIT / "formatting.py"):
        heavy = [name for name in imports_of(path)
                 if name.split(".")[0] in {"rich", "textual"} or name.startswith("dragoon.")]
        assert heavy == [], path.name


def test_the_checker_sees_type_checking_relative_and_lazy_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    from ..application import CockpitApp\n"
                     "def later():\n    import dragoon.cockpit.app.live\n")
    found = set(imports_of(probe, package="dragoon.cockpit.app.screens"))
    assert {APPLICATION, "dragoon.cockpit.app.live"} <= found
    eager = set(imports_of(probe, package="dragoon.cockpit.app.screens", top_level_only=True))
    assert APPLICATION in eager and "dragoon.cockpit.app.live" not in eager
