"""The main screen: drone grid on top, task tree and log pane below (k9s-style)."""

from __future__ import annotations

from collections.abc import Callable

from dragoon.cockpit.app.widgets.connection_bar import ConnectionBar
from dragoon.cockpit.app.widgets.fleet.drone_grid import DroneGrid
from dragoon.cockpit.app.widgets.logs.log_view import LogView
from dragoon.cockpit.app.widgets.tasks.task_tree import TaskTree
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static


class MainScreen(Screen[None]):
    def __init__(self, *, relay_url: str, pilot: str, clock: Callable[[], float]) -> None:
        super().__init__()
        self.relay_url = relay_url
        self.pilot = pilot
        self.clock = clock

    def compose(self) -> ComposeResult:
        yield ConnectionBar(self.relay_url, self.pilot, id="bar")
        with Vertical(id="grid-pane", classes="pane"):
            yield DroneGrid(clock=self.clock, id="grid")
        with Horizontal(id="lower"):
            with Vertical(id="tree-pane", classes="pane"):
                yield TaskTree(clock=self.clock, id="tree")
            with Vertical(id="log-pane", classes="pane"):
                yield Static(Text("no task selected", style="dim"), id="log-title")
                yield LogView(id="log")
        yield Input(placeholder="filter drones", id="filter")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#grid-pane").border_title = "drones"
        self.query_one("#tree-pane").border_title = "tasks"
        self.query_one("#log-pane").border_title = "output"
