"""The inbox: messages sent by tasks; marking one read acknowledges it on the relay.

The screen reads the shared `CockpitState` it is given; acknowledging and
jumping to a task are asked of the app with `AckRequested` and
`TaskJumpRequested`, which bubble from the screen to the app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from dragoon.cockpit.app.messages import AckRequested, TaskJumpRequested
from dragoon.cockpit.app.state import CockpitState
from dragoon.cockpit.formatting import format_ago, message_text
from dragoon.cockpit.safe_text import plain
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static


class InboxScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back", id="inbox.back"),
        Binding("r,space", "mark_read", "Mark read", id="inbox.read"),
        Binding("A", "mark_all_read", "All read", id="inbox.all"),
        # priority: the table binds Enter too (hidden); this one is the inbox's, and shown
        Binding("enter", "jump", "Go to task", priority=True, id="inbox.jump"),
        Binding("u", "toggle_unread", "Unread only", id="inbox.unread"),
        # k9s / less motion, as in every list of the cockpit (g was "go to task" once)
        Binding("j", "motion('cursor_down')", "Down", show=False, id="inbox.down"),
        Binding("k", "motion('cursor_up')", "Up", show=False, id="inbox.up"),
        Binding("g", "motion('scroll_top')", "Top", show=False, id="inbox.top"),
        Binding("G", "motion('scroll_bottom')", "Bottom", show=False, id="inbox.bottom"),
    ]

    def __init__(self, *, state: CockpitState, clock: Callable[[], float],
                 readonly: bool = False) -> None:
        super().__init__()
        self.state = state
        self.clock = clock
        self.readonly = readonly
        self.unread_only = False

    def compose(self) -> ComposeResult:
        yield Static(id="inbox-title")
        yield DataTable(id="inbox", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#inbox", DataTable)
        table.add_column("", key="read", width=1)
        table.add_column("Id", key="id", width=6)
        table.add_column("Age", key="age", width=7)
        table.add_column("Drone", key="drone", width=14)
        table.add_column("Task", key="task", width=13)
        table.add_column("Text", key="text")
        self.refresh_messages()
        table.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in ("mark_read", "mark_all_read") and self.readonly)

    def refresh_messages(self) -> None:
        """Rebuild (the inbox is short); the cursor stays on the same message."""
        table = self.query_one("#inbox", DataTable)
        state = self.state
        selected = self.selected_id
        now = self.clock()
        messages = sorted(state.messages.values(), key=lambda m: -int(m["id"]))
        if self.unread_only:
            messages = [m for m in messages if not m.get("acked")]
        table.clear()
        for m in messages:
            unread = not m.get("acked")
            style = "bold" if unread else "dim"
            table.add_row(
                Text("●" if unread else " ", style="yellow"),
                plain(m["id"], style=style),
                Text(format_ago(m.get("created_at"), now), style="dim"),
                plain(m.get("drone") or "", style=style),  # a drone's words, and a task's:
                plain(m.get("task") or "", style=style),  # safe text, never markup
                plain(message_text(m), style="red" if "error" in m else style),
                key=str(m["id"]),
            )
        if selected is not None and str(selected) in {str(m["id"]) for m in messages}:
            table.move_cursor(row=table.get_row_index(str(selected)), animate=False)
        self.query_one("#inbox-title", Static).update(
            Text(f" Inbox: {state.unread} unread of {len(state.messages)}", style="bold"))

    @property
    def selected_id(self) -> int | None:
        table = self.query_one("#inbox", DataTable)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return None if row_key.value is None else int(row_key.value)

    def action_mark_read(self) -> None:
        message_id = self.selected_id
        if message_id is not None:
            self.post_message(AckRequested([message_id]))

    def action_mark_all_read(self) -> None:
        self.post_message(AckRequested([int(m["id"]) for m in self.state.unread_messages()]))

    def action_jump(self) -> None:
        message_id = self.selected_id
        if message_id is None:
            return
        task_id = self.state.messages[message_id].get("task")
        if task_id:
            self.post_message(TaskJumpRequested(str(task_id)))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """A click on a selected row is the table's selection: the same jump as Enter."""
        event.stop()
        self.action_jump()

    def action_motion(self, action: str) -> None:
        table = self.query_one("#inbox", DataTable)
        getattr(table, f"action_{action}")()

    def action_toggle_unread(self) -> None:
        self.unread_only = not self.unread_only
        self.refresh_messages()
