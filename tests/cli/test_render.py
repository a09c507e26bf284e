"""The CLI's tables on a terminal: the cockpit's colours, and relay text printed as text."""

from __future__ import annotations

import pytest
from dragoon.cockpit import theme
from dragoon.cockpit.cli import render
from rich.color import ColorSystem
from rich.style import Style


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """stdout counts as a colour terminal (rich honours FORCE_COLOR; truecolor pins codes)."""
    monkeypatch.setattr(render, "is_terminal", lambda stream=None: True)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLORTERM", "truecolor")
    monkeypatch.delenv("NO_COLOR", raising=False)


def painted(text: str, style: str) -> str:
    """`text` as rich writes it in `style` on a truecolor terminal."""
    return Style.parse(style).render(text, color_system=ColorSystem.TRUECOLOR)


def test_table_states_wear_the_cockpits_colours(terminal: None, capsys) -> None:
    render.print_table(["ID", "STATE"], [["t-1", "failed"], ["t-2", "queued"],
                                         ["box", "offline"], ["box-2", "online (draining)"]],
                       state_column=1)
    out = capsys.readouterr().out
    assert painted("failed", theme.TASK_STYLES["failed"]) in out
    assert painted("queued", theme.TASK_STYLES["queued"]) in out
    assert painted("offline", theme.DRONE_STYLES["offline"]) in out
    assert painted("online (draining)", theme.DRONE_STYLES["draining"]) in out


def test_task_fields_colour_the_state_line(terminal: None, capsys) -> None:
    render.print_fields([("id", "t-1"), ("state", "running")], state="running")
    assert painted("running", theme.TASK_STYLES["running"]) in capsys.readouterr().out


def test_relay_text_in_a_table_is_never_read_as_markup(terminal: None, capsys) -> None:
    render.print_table(["ID", "STATE", "NAME"], [["t-1", "[red]lost", "[bold]sweep[/bold]"]],
                       state_column=1)
    out = capsys.readouterr().out
    assert "[bold]sweep[/bold]" in out
    assert "[red]lost" in out


def test_piped_tables_are_plain_columns(capsys) -> None:
    render.print_table(["ID", "STATE"], [["t-1", "failed"]], state_column=1)
    assert capsys.readouterr().out == "ID   STATE\nt-1  failed\n"
