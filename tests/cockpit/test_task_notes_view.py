"""The cockpit's task view shows a task's notes (an artifact pattern that matched nothing)."""

from __future__ import annotations

from dragoon.cockpit.app.screens.detail import task_summary
from rich.console import Console


def shown(task: dict[str, object]) -> str:
    console = Console(width=120, record=True, color_system=None)
    console.print(task_summary(task, now=0.0))
    return console.export_text()


def test_each_note_is_a_row_of_its_own_as_safe_text() -> None:
    task = {"id": "t-aaaab22222", "state": "succeeded",
            "notes": ["artifact pattern 'out/*.pt' matched nothing", "evil \x1b[2J note"]}
    lines = shown(task).splitlines()
    assert any(line.split() == ["Note", "artifact", "pattern", "'out/*.pt'", "matched",
                                "nothing"] for line in lines), lines
    assert any("evil ␛[2J note" in line for line in lines), lines


def test_a_task_without_notes_has_no_note_row() -> None:
    for notes in ([], None, "not a list"):
        text = shown({"id": "t-aaaab22222", "state": "succeeded", "notes": notes})
        assert "Note" not in text
