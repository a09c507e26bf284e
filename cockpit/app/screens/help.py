"""`?`: every key of the cockpit, from the same table as the palette."""

from __future__ import annotations

from typing import ClassVar

from dragoon.cockpit.app.palette import ACTIONS
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

EXTRA_KEYS: tuple[tuple[str, str], ...] = (
    ("tab / shift+tab", "Next / previous pane"),
    ("s / S", "Sort the grid by the next column / reverse (or click a header)"),
    ("n / N", "Next / previous search match in the log"),
    ("End", "Follow the log again (scrolling up pauses it)"),
    ("w", "Wrap long log lines, or scroll them sideways again"),
    ("←/→, h/l", "Scroll the log sideways (when not wrapping)"),
    ("ctrl+p", "Command palette, with the equivalent dragoon command"),
    ("escape", "Close a dialog or go back"),
)


def help_table(readonly: bool) -> Table:
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    table.add_column("Key", style="bold cyan", no_wrap=True)
    table.add_column("Action")
    table.add_column("Command line", style="dim")
    for action in ACTIONS:
        if readonly and action.changes:
            continue
        table.add_row(action.key, action.title, action.cli)
    for key, text in EXTRA_KEYS:
        table.add_row(key, text, "")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "app.pop_screen", "Close"),
    ]

    def __init__(self, *, readonly: bool) -> None:
        super().__init__()
        self.readonly = readonly

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help"):
            yield Static(Text("dragoon cockpit: keys", style="bold"), classes="dialog-title")
            yield Static(help_table(self.readonly))
