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
STATE_WIDTH: Final = 13  # "offline 7m00s"
TASKS_WIDTH: Final = 7  # "Tasks ▲"; the running/slots a pilot must always see
WIDE_BAR: Final = 6
NARROW_BAR: Final = 2
LOAD_EXTRA: Final = 5  # " 87%" after the bar
NAME_WIDTHS: Final = (8, 24)  # least, most
LABEL_WIDTHS: Final = (8, 40)
SORT_MARKS: Final = {False: "▲", True: "▼"}


def column_widths(width: int, padding: int = 1) -> tuple[dict[str, int], int]:
    """Column widths that fit `width` cells, and the load bars' width.

    Every column is kept whole at 80 columns (slots included): below the room the
    wide bars need they shrink to two cells, and the name and labels share what is
    left (within bounds), so a wide terminal shows long labels instead of blank.
    """
    room = width - 2 * padding * len(DRONE_COLUMNS)
    wide_fixed = STATE_WIDTH + TASKS_WIDTH + 3 * (WIDE_BAR + LOAD_EXTRA)
    bar = WIDE_BAR if room - wide_fixed >= 2 * NAME_WIDTHS[0] + LABEL_WIDTHS[0] else NARROW_BAR
    rest = room - (STATE_WIDTH + TASKS_WIDTH + 3 * (bar + LOAD_EXTRA))
    name = max(NAME_WIDTHS[0], min(NAME_WIDTHS[1], rest // 2))
    labels = max(LABEL_WIDTHS[0], min(LABEL_WIDTHS[1], rest - name))
    load = bar + LOAD_EXTRA
    return ({"name": name, "state": STATE_WIDTH, "labels": labels, "cpu": load, "mem": load,
             "gpu": load, "tasks": TASKS_WIDTH}, bar)


def drone_cell(drone: Mapping[str, Any], column: str, now: float,
               bar: int = WIDE_BAR) -> str | Text:
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
        return load_bar(cpu_load(drone), bar)
    if column == "mem":
        return load_bar(mem_load(drone), bar)
    if column == "gpu":
        return load_bar(gpu_load(drone), bar)
    if column == "tasks":
        running, slots = task_counts(drone)
        return Text(f"{running}/{slots}", style="bold" if running else "dim", justify="right")
    raise KeyError(column)


class DroneGrid(DataTable[str | Text]):
    """Sort with `s` (next column) / `S` (reverse) or by clicking a header; `/` filters."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "sort_next", "Sort", id="grid.sort"),
        Binding("S", "sort_reverse", "Reverse", show=False, id="grid.reverse"),
        # k9s / less motion: j k move the cursor, g G go to the first / last drone
        Binding("j", "cursor_down", "Down", show=False, id="grid.down"),
        Binding("k", "cursor_up", "Up", show=False, id="grid.up"),
        Binding("g", "scroll_top", "Top", show=False, id="grid.top"),
        Binding("G", "scroll_bottom", "Bottom", show=False, id="grid.bottom"),
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
        self.widths, self.bar = column_widths(80)
        self._laid_out_for = -1  # the width the columns were last fitted to

    def on_mount(self) -> None:
        self._add_columns()
        # offline drones say "offline 5m": that text ages without any event
        self.set_interval(5.0, self.refresh_ages)

    def _add_columns(self) -> None:
        for column in DRONE_COLUMNS:
            self.add_column(self._column_label(column), key=column, width=self.widths[column])

    def _column_label(self, column: str) -> Text:
        """The sorted column's header carries ▲ (ascending) or ▼ (descending), as in k9s."""
        label = COLUMN_LABELS[column]
        if column != self.sort_column:
            return Text(label)
        return Text.assemble(label, " ", (SORT_MARKS[self.sort_reverse], "bold"))

    def _show_sort(self) -> None:
        for key, column in self.columns.items():
            column.label = self._column_label(str(key.value))
        self._clear_caches()  # the header line is cached like any row
        self.refresh()

    def on_resize(self) -> None:
        """Fit the columns to the pane; a rebuild only when the fit changed (rare)."""
        width = self.size.width - self.styles.scrollbar_size_vertical
        if width <= 0 or width == self._laid_out_for:
            return
        self._laid_out_for = width
        widths, bar = column_widths(width, self.cell_padding)
        if (widths, bar) == (self.widths, self.bar):
            return
        self.widths, self.bar = widths, bar
        selected = self.selected_name
        with self.app.batch_update():
            self.clear(columns=True)
            self._add_columns()
            self._fill(selected)

    # ------------------------------------------------------------------ data in

    def _row(self, drone: Mapping[str, Any]) -> list[str | Text]:
        now = self.clock()
        return [drone_cell(drone, column, now, self.bar) for column in DRONE_COLUMNS]

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
            cell = drone_cell(change.drone, column, now, self.bar)
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
        self._show_sort()
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
            self._fill(selected)

    def _fill(self, selected: str | None) -> None:
        for drone in sorted_drones(self.drones.values(), self.sort_column,
                                   reverse=self.sort_reverse, query=self.query_text):
            self.add_row(*self._row(drone), key=str(drone["name"]))
        self.sorts += 1
        self._restore_cursor(selected)
