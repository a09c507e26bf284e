"""A job's view: its trials as a live table (params, state, metrics) and a plot of a metric.

Rows come from cockpit/trials.py over the tasks and messages the shared
`CockpitState` holds; when it opens, the app reads every task of the job
(`DataSource.job_tasks`) into that state, since a snapshot holds only the newest
tasks. The app calls `refresh_job` when a change to the job, one of its tasks
or a message arrives. Enter on a trial asks the app to follow its log
(`TaskJumpRequested`): the main screen's log pane, on that task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from dragoon.cockpit.app.messages import TaskJumpRequested
from dragoon.cockpit.app.state import CockpitState
from dragoon.cockpit.app.widgets.plot.plot_view import PlotView
from dragoon.cockpit.formatting import format_duration
from dragoon.cockpit.safe_text import clean, plain
from dragoon.cockpit.theme import task_style
from dragoon.cockpit.trials import (
    FIXED_COLUMNS,
    SEALED,
    TrialRow,
    columns,
    job_counts,
    newest_messages,
    plot_points,
    progress_text,
    rows,
    sort_rows,
    value,
)
from dragoon.shared.metrics_text import metric_text
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

MESSAGE_WIDTH = 40
REDRAW_INTERVAL = 0.5


def _cell(row: TrialRow, column: str, now: float) -> Text:
    raw = value(row, column, now)
    if column.startswith("param:"):
        return plain(SEALED if row.params is None else raw if raw is not None else "-",
                     style="dim" if row.params is None else "")
    if column.startswith("metric:"):
        return Text(metric_text(raw) if raw is not None else "-", style="cyan")
    if column == "state":
        return plain(raw or "?", style=task_style(str(raw)))
    if column == "duration":
        return Text(format_duration(raw))
    if column == "exit":
        signal = row.task.get("signal")
        return plain(f"sig {signal}" if signal else "-" if raw is None else raw)
    if column == "message":
        text = clean(" ".join(str(raw or row.task.get("error") or "-").split()))
        return Text(text if len(text) <= MESSAGE_WIDTH else text[:MESSAGE_WIDTH - 1] + "…")
    return plain("-" if raw is None else raw)


def _header(column: str) -> str:
    return column.split(":", 1)[1] if ":" in column else column


class JobScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back", id="job.back"),
        Binding("s", "sort_next", "Sort", id="job.sort"),
        Binding("S", "sort_flip", "Reverse", id="job.reverse"),
        Binding("m", "metric_next", "Metric", id="job.metric"),
        Binding("p", "x_next", "Plot x", id="job.x"),
        Binding("j", "move(1)", "Down", show=False, id="job.down"),
        Binding("k", "move(-1)", "Up", show=False, id="job.up"),
    ]

    def __init__(self, job_id: str, *, state: CockpitState, clock: Callable[[], float]) -> None:
        super().__init__()
        self.job_id = job_id
        self.state = state
        self.clock = clock
        self.sort_column = "trial"
        self.reverse = False
        self.metric: str | None = None
        self.x: str | None = None
        self.trials: list[TrialRow] = []
        self.columns: list[str] = []
        self.refreshes = 0
        self._dirty = False
        self._ticks = 0

    def compose(self) -> ComposeResult:
        yield Static(id="job-title")
        yield DataTable(id="trials", cursor_type="row", zebra_stripes=True)
        yield PlotView(id="plot")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.refresh_job()
        self.set_interval(REDRAW_INTERVAL, self._tick)

    def mark_dirty(self) -> None:
        """News for this job: redrawn at the next tick, so a burst of trial events costs
        one redraw of the table (500 rows take ~45 ms; bench/bench_cockpit_jobs.py)."""
        self._dirty = True

    def _tick(self) -> None:
        """News, or once a second the running trials' durations."""
        self._ticks += 1
        running = self._ticks % 2 == 0 and any(r.task.get("state") == "running"
                                               for r in self.trials)
        if self._dirty or running:
            self._dirty = False
            self.refresh_job()

    # ------------------------------------------------------------------ drawing

    def refresh_job(self) -> None:
        now = self.clock()
        tasks = self.state.job_tasks(self.job_id)
        job = self.state.jobs.get(self.job_id)
        messages = [m for m in self.state.messages.values()
                    if m.get("task") in {t.get("id") for t in tasks}]
        found = rows(tasks, newest_messages(messages))
        params, metrics = columns(found)
        self.columns = ["trial", *(f"param:{p}" for p in params), *FIXED_COLUMNS[1:],
                        *(f"metric:{m}" for m in metrics)]
        if self.sort_column not in self.columns:
            self.sort_column = "trial"
        self.trials = sort_rows(found, self.sort_column, reverse=self.reverse, now=now)
        self._title(job, tasks)
        self._table(now)
        self._plot(params, metrics, messages, job)
        self.refreshes += 1

    def _title(self, job: dict[str, Any] | None, tasks: list[dict[str, Any]]) -> None:
        job = job or {}
        text = Text("job ", style="bold")
        text.append(clean(self.job_id), style="bold")
        if job.get("name"):
            text.append(f"  {clean(job['name'])}")
        text.append(f"  {clean(job.get('kind') or '')}  {clean(job.get('state') or '')}  ",
                    style="dim")
        text.append(progress_text(job_counts(job, tasks)))
        if job.get("stopped"):
            text.append(f"  stopped: {clean(job['stopped'])}", style="red")
        arrow = "▼" if self.reverse else "▲"
        text.append(f"   sort {_header(self.sort_column)} {arrow}", style="dim")
        self.query_one("#job-title", Static).update(text)

    def _table(self, now: float) -> None:
        table: DataTable[Text] = self.query_one("#trials", DataTable)
        cursor_key = self.selected_task_id
        table.clear(columns=True)
        for column in self.columns:
            label = _header(column) + ((" ▼" if self.reverse else " ▲")
                                       if column == self.sort_column else "")
            table.add_column(label, key=column)
        for row in self.trials:
            table.add_row(*(_cell(row, c, now) for c in self.columns), key=row.task_id)
        if cursor_key is not None:
            index = next((i for i, r in enumerate(self.trials) if r.task_id == cursor_key), 0)
            table.move_cursor(row=index, animate=False)

    def _plot(self, params: list[str], metrics: list[str], messages: list[dict[str, Any]],
              job: dict[str, Any] | None) -> None:
        plot = self.query_one(PlotView)
        if self.metric not in metrics:
            self.metric = metrics[0] if metrics else None
        choices = [*params, "time"]
        if self.x not in choices:
            self.x = choices[0]
        if self.metric is None:
            plot.show([], None, "no metric reported yet (dragoon notify --metric NAME=VALUE)")
            return
        start = float((job or {}).get("created_at") or 0)
        points, categories = plot_points(self.trials, self.metric, self.x, messages, start)
        x_name = "time (s since the job began)" if self.x == "time" else self.x
        plot.show(points, categories, f"{self.metric} against {x_name}   (m: metric, p: x)")

    # ------------------------------------------------------------------ keys

    @property
    def selected_task_id(self) -> str | None:
        if not self.is_mounted:
            return None
        table = self.query_one("#trials", DataTable)
        if not table.row_count or not self.trials:
            return None
        return self.trials[min(table.cursor_row, len(self.trials) - 1)].task_id

    def action_sort_next(self) -> None:
        at = self.columns.index(self.sort_column) if self.sort_column in self.columns else -1
        self.sort_column = self.columns[(at + 1) % len(self.columns)]
        self.refresh_job()

    def action_sort_flip(self) -> None:
        self.reverse = not self.reverse
        self.refresh_job()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        if column == self.sort_column:
            self.reverse = not self.reverse
        else:
            self.sort_column, self.reverse = column, False
        self.refresh_job()

    def action_metric_next(self) -> None:
        _params, metrics = columns(self.trials)
        if metrics:
            at = metrics.index(self.metric) if self.metric in metrics else -1
            self.metric = metrics[(at + 1) % len(metrics)]
            self.refresh_job()

    def action_x_next(self) -> None:
        params, _metrics = columns(self.trials)
        choices = [*params, "time"]
        at = choices.index(self.x) if self.x in choices else -1
        self.x = choices[(at + 1) % len(choices)]
        self.refresh_job()

    def action_move(self, step: int) -> None:
        table = self.query_one("#trials", DataTable)
        if table.row_count:
            table.move_cursor(row=max(0, table.cursor_row + step))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.post_message(TaskJumpRequested(str(event.row_key.value)))
