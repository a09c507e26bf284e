"""The drone grid: one keyed row per drone, patched cell by cell.

A thousand drones send metrics every few seconds; rebuilding the table for
each would freeze the cockpit. Rows are keyed by drone name, a change touches
only the cells whose fields changed (`state.columns_for`), everything of one
batch is applied inside `batch_update()`, the table re-sorts only when a
sorted-on field changed, and the cursor stays on the same drone when rows move.
Filtering rebuilds the rows because `remove_row` re-lays the whole table anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final

from dragoon.cockpit.app.state import (
    DRONE_COLUMNS,
    Change,
    DroneAdded,
    DroneRemoved,
    DroneUpdated,
    columns_for,
    cpu_load,
    drone_matches,
    drone_sort_key,
    drone_status,
    gpu_load,
    mem_load,
    sort_key_changed,
    sorted_drones,
    task_counts,
)
from dragoon.cockpit.app.widgets.fleet.cells import load_bar
from dragoon.cockpit.safe_text import clean, plain
from dragoon.cockpit.theme import state_style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

COLUMN_LABELS: Final = {
    "name": "Drone", "state": "State", "labels": "Labels", "cpu": "CPU", "mem": "Mem",
    "gpu": "GPU", "tasks": "Tasks",
}
COLUMN_WIDTHS: Final = {
    "name": 14, "state": 13, "labels": 14, "cpu": 11, "mem": 11, "gpu": 11, "tasks": 5,
}


def drone_cell(drone: Mapping[str, Any], column: str, now: float) -> str | Text:
    """What one cell shows; pure, so the snapshot tests and the bench share it.

    Names, states and labels are what the relay sent: plain ``Text`` through
    cockpit/safe_text.py, never markup (a str cell of a DataTable is parsed as markup).
    """
    if column == "name":
        return plain(drone.get("name", ""))
    if column == "state":
        status = drone_status(drone, now)
        return Text(status, style=state_style(status))
    if column == "labels":
        labels = drone.get("labels")
        shown = ",".join(map(str, labels)) if isinstance(labels, list) else ""
        text = plain(shown, style="cyan")
        text.overflow = "ellipsis"
        return text
    if column == "cpu":
        return load_bar(cpu_load(drone))
    if column == "mem":
        return load_bar(mem_load(drone))
    if column == "gpu":
        return load_bar(gpu_load(drone))
    if column == "tasks":
        running, slots = task_counts(drone)
        return Text(f"{running}/{slots}", style="bold" if running else "dim", justify="right")
    raise KeyError(column)


class DroneGrid(DataTable[str | Text]):
    """Sort with `s` (next column) / `S` (reverse) or by clicking a header; `/` filters."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "sort_next", "Sort", id="grid.sort"),
        Binding("S", "sort_reverse", "Reverse", show=False, id="grid.reverse"),
    ]

    def __init__(self, *, clock: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.clock = clock
        self.drones: dict[str, dict[str, Any]] = {}
        self.sort_column = "name"
        self.sort_reverse = False
        self.query_text = ""
        self.sorts = 0  # how many times rows were re-sorted (tests and the bench read it)
        self.cell_updates = 0

    def on_mount(self) -> None:
        for column in DRONE_COLUMNS:
            self.add_column(COLUMN_LABELS[column], key=column, width=COLUMN_WIDTHS[column])
        # offline drones say "offline 5m": that text ages without any event
        self.set_interval(5.0, self.refresh_ages)

    # ------------------------------------------------------------------ data in

    def _row(self, drone: Mapping[str, Any]) -> list[str | Text]:
        now = self.clock()
        return [drone_cell(drone, column, now) for column in DRONE_COLUMNS]

    @property
    def selected_name(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key
        except Exception:
            return None
        return None if key.value is None else str(key.value)

    def apply(self, changes: Iterable[Change]) -> None:
        """Patch rows for a batch of changes; re-sort once if the order may have moved."""
        resort = False
        selected = self.selected_name
        now = self.clock()
        with self.app.batch_update():
            for change in changes:
                if isinstance(change, DroneAdded):
                    self.drones[change.name] = change.drone
                    if drone_matches(change.drone, self.query_text):
                        self.add_row(*self._row(change.drone), key=change.name)
                        resort = True
                elif isinstance(change, DroneUpdated):
                    resort |= self._update(change, now)
                elif isinstance(change, DroneRemoved):
                    self.drones.pop(change.name, None)
                    if RowKey(change.name) in self.rows:
                        self.remove_row(change.name)
            if resort:
                self._sort(selected)

    def _update(self, change: DroneUpdated, now: float) -> bool:
        self.drones[change.name] = change.drone
        present = RowKey(change.name) in self.rows
        wanted = drone_matches(change.drone, self.query_text)
        if present != wanted:  # a label or state change moved it in or out of the filter
            if wanted:
                self.add_row(*self._row(change.drone), key=change.name)
            else:
                self.remove_row(change.name)
            return wanted
        if not present:
            return False
        for column in columns_for(change.changed):
            cell = drone_cell(change.drone, column, now)
            # 45.2 % → 45.4 % draws the same cell: skip it, any update_cell costs a repaint
            if cell != self.get_cell(change.name, column):
                self.update_cell(change.name, column, cell)
                self.cell_updates += 1
        return sort_key_changed(change, self.sort_column)

    def refresh_ages(self) -> None:
        now = self.clock()
        with self.app.batch_update():
            for name, drone in self.drones.items():
                if drone.get("state") == "offline" and RowKey(name) in self.rows:
                    self.update_cell(name, "state", drone_cell(drone, "state", now))

    # ------------------------------------------------------------------ order

    def _sort(self, selected: str | None) -> None:
        column = self.sort_column
        # DataTable hands the key the name cell, which shows the name as safe text: for a
        # name as the relay's rule makes them that is the name itself, for a lying relay's
        # it may not be, and two such may even look alike (their order is then theirs).
        shown = {clean(name): drone for name, drone in self.drones.items()}

        def key(cell: str | Text) -> tuple[Any, ...]:
            drone = shown.get(str(cell))
            return drone_sort_key(drone, column) if drone is not None else (True, 0, str(cell))

        self.sort("name", key=key, reverse=self.sort_reverse)
        self.sorts += 1
        self._restore_cursor(selected)

    def _restore_cursor(self, name: str | None) -> None:
        if name is not None and RowKey(name) in self.rows:
            self.move_cursor(row=self.get_row_index(name), animate=False, scroll=True)

    def set_sort(self, column: str, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        self._sort(self.selected_name)

    def action_sort_next(self) -> None:
        index = (DRONE_COLUMNS.index(self.sort_column) + 1) % len(DRONE_COLUMNS)
        self.set_sort(DRONE_COLUMNS[index], False)

    def action_sort_reverse(self) -> None:
        self.set_sort(self.sort_column, not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.set_sort(str(event.column_key.value))

    def set_filter(self, query: str) -> None:
        """Rebuild the rows that match; the cursor stays on its drone if it still shows."""
        selected = self.selected_name
        self.query_text = query
        with self.app.batch_update():
            self.clear()
            for drone in sorted_drones(self.drones.values(), self.sort_column,
                                       reverse=self.sort_reverse, query=query):
                self.add_row(*self._row(drone), key=str(drone["name"]))
            self.sorts += 1
            self._restore_cursor(selected)
