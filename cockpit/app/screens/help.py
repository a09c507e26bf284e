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
    ("j / k", "Down / up in the grid, the task tree, the log, the detail's artifacts"),
    ("g / G", "First / last line (G in the log follows it again)"),
    ("s / S", "Sort the grid by the next column / reverse (or click a header); ▲▼ marks it"),
    ("n / N", "Next / previous search match in the log"),
    ("End", "Follow the log again (scrolling up pauses it)"),
    ("w", "Wrap long log lines, or scroll them sideways again"),
    ("←/→, h/l", "Scroll the log sideways (when not wrapping)"),
    ("y", "The task detail's raw JSON"),
    ("ctrl+p", "Command palette, with the equivalent dragoon command"),
    ("escape", "Clear the filter, close a dialog or go back"),
)

# `?` in the job view lists these first (docs/cockpit.md, "Jobs")
JOB_KEYS: tuple[tuple[str, str], ...] = (
    ("enter (tree)", "On a job in the task tree: this view (space opens or folds the job)"),
    ("s / S", "Sort the trials by the next column / reverse (or click a header)"),
    ("m", "Plot the next metric"),
    ("p", "Plot against the next parameter, then time"),
    ("enter", "Follow the selected trial's log in the main screen"),
    ("escape / q", "Back to the main screen"),
)


def help_table(readonly: bool, *, jobs: bool = False) -> Table:
    table = Table(box=None, padding=(0, 1), show_header=True, header_style="bold", expand=True)
    table.add_column("Key", style="bold cyan", no_wrap=True)
    table.add_column("Action", ratio=3)
    table.add_column("Command line", style="dim", ratio=2)
    for key, text in JOB_KEYS if jobs else ():
        table.add_row(key, f"Job view: {text}", "dragoon job JOB" if key == "s / S" else "")
    for action in ACTIONS:
        if readonly and action.changes:
            continue
        table.add_row(action.key, action.title, action.cli.format(task="TASK", drone="DRONE"))
    for key, text in EXTRA_KEYS:
        table.add_row(key, text, "")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "app.pop_screen", "Close"),
        Binding("j", "scroll(1)", "Down", show=False),
        Binding("k", "scroll(-1)", "Up", show=False),
        Binding("g", "edge(False)", "Top", show=False),
        Binding("G", "edge(True)", "Bottom", show=False),
    ]

    def __init__(self, *, readonly: bool, jobs: bool = False) -> None:
        super().__init__()
        self.readonly = readonly
        self.jobs = jobs

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help"):
            yield Static(Text("dragoon cockpit: keys", style="bold"), classes="dialog-title")
            yield Static(help_table(self.readonly, jobs=self.jobs))
            yield Static("j k g G scroll · esc closes", classes="dialog-hint")

    def action_scroll(self, step: int) -> None:
        self.query_one("#help", VerticalScroll).scroll_relative(y=step, animate=False)

    def action_edge(self, bottom: bool) -> None:
        box = self.query_one("#help", VerticalScroll)
        if bottom:
            box.scroll_end(animate=False)
        else:
            box.scroll_home(animate=False)
