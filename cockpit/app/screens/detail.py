"""A task's detail: spec, timestamps, resource use, artifacts and its messages.

The text part is a pure function of the task dict and the clock, so the
snapshot tests pin it. The screen reads the shared `CockpitState` it is given
and asks the app for the rest by message: `ArtifactsRequested` when it opens
(the app's worker answers with `show_artifacts`), `DownloadRequested` on `d`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from dragoon.cockpit.app.messages import ArtifactsRequested, DownloadRequested
from dragoon.cockpit.app.state import CockpitState, number, task_elapsed
from dragoon.cockpit.formatting import format_duration, human_size
from dragoon.cockpit.safe_text import clean, plain
from dragoon.cockpit.theme import task_icon, task_style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static


def _when(ts: object) -> str:
    if not ts or isinstance(ts, bool) or not isinstance(ts, int | float):
        return "-"
    try:
        return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):  # a relay's nonsense is no date
        return "-"


def task_summary(task: dict[str, Any], now: float) -> Table:
    """Every value is what a pilot, a drone or the relay wrote: plain safe ``Text``
    (cockpit/safe_text.py), for a str cell of a rich table would be parsed as markup."""
    state = str(task.get("state"))
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Task", plain(task["id"], style="bold"))
    table.add_row("State", plain(f"{task_icon(state)} {state}", style=task_style(state)))
    if task.get("error"):
        table.add_row("Error", plain(task["error"], style="red"))
    notes = task.get("notes")
    for note in notes if isinstance(notes, list) else []:
        table.add_row("Note", plain(str(note), style="yellow"))
    target = task.get("target") or {}
    where = task.get("drone") or ("labels " + ",".join(map(str, target.get("labels") or [])))
    table.add_row("Drone", plain(where))
    table.add_row("Pilot", plain(task.get("pilot") or "-"))
    spec = task.get("spec") or {}
    table.add_row("Name", plain(task.get("name") or spec.get("name") or "-"))
    table.add_row("Command", plain(spec.get("command", ""), style="cyan"))
    if spec.get("cwd"):
        table.add_row("Cwd", plain(spec["cwd"]))
    table.add_row("Timeout", format_duration(spec.get("timeout")) if spec.get("timeout")
                  else "none")
    if spec.get("env"):
        table.add_row("Env", plain(" ".join(f"{k}={v}" for k, v in sorted(spec["env"].items()))))
    if spec.get("artifacts"):
        table.add_row("Artifacts", plain(", ".join(map(str, spec["artifacts"]))))
    for label, key in (("Created", "created_at"), ("Dispatched", "dispatched_at"),
                       ("Started", "started_at"), ("Finished", "finished_at")):
        table.add_row(label, _when(task.get(key)))
    elapsed = task_elapsed(task, now)
    table.add_row("Elapsed", format_duration(elapsed) if elapsed is not None else "-")
    code = task.get("exit_code")
    table.add_row("Exit", plain("-" if code is None and not task.get("signal") else
                                (f"signal {task['signal']}" if task.get("signal") else code)))
    cpu = number(task.get("cpu_seconds"))
    table.add_row("CPU", "-" if cpu is None else f"{cpu:.1f} s")
    table.add_row("Peak RSS", human_size(task.get("peak_rss")))
    table.add_row("Output", f"stdout {human_size(task.get('stdout_size') or 0)}, "
                            f"stderr {human_size(task.get('stderr_size') or 0)}"
                  + ("  (truncated)" if task.get("output_truncated") else ""))
    return table


class TaskDetailScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back", id="detail.back"),
        Binding("d", "download", "Download artifact", id="detail.download"),
        Binding("c", "app.cancel_task", "Cancel task", id="detail.cancel"),
        Binding("j", "raw", "JSON", id="detail.json"),
    ]

    def __init__(self, task_id: str, *, state: CockpitState,
                 clock: Callable[[], float]) -> None:
        super().__init__()
        self.task_id = task_id
        self.state = state
        self.clock = clock
        self.artifact_rows: list[dict[str, Any]] = []
        self.show_raw = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail-body"):
            yield Static(id="detail-summary")
            yield Static(Text("Artifacts", style="bold underline"), classes="section")
            yield DataTable(id="artifacts", cursor_type="row")
            yield Static(Text("Messages", style="bold underline"), classes="section")
            yield Static(id="detail-messages")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#artifacts", DataTable)
        table.add_columns("Path", "Size", "SHA-256", "Uploaded")
        self.refresh_task()
        self.post_message(ArtifactsRequested(self.task_id))

    def refresh_task(self) -> None:
        task = self.state.tasks.get(self.task_id)
        summary = self.query_one("#detail-summary", Static)
        if task is None:
            summary.update(plain(f"{self.task_id}: not known yet", style="dim"))
            return
        if self.show_raw:
            # JSON-escaped (ensure_ascii): no control or bidi character survives, so the
            # lines stay lines; shown as Text, never markup
            summary.update(Text(json.dumps(task, indent=2, sort_keys=True, ensure_ascii=True)))
        else:
            summary.update(task_summary(task, self.clock()))
        messages = [m for m in self.state.messages.values()
                    if m.get("task") == self.task_id]
        text = Text()
        for m in sorted(messages, key=lambda m: int(m["id"])):
            text.append(f"#{clean(m['id'])} ", style="dim")
            text.append(_when(m.get("created_at")) + "  ", style="dim")
            text.append(clean(m.get("text", "")), style="" if m.get("acked") else "bold")
            text.append("\n")
        self.query_one("#detail-messages", Static).update(
            text if messages else Text("none", style="dim"))

    def show_artifacts(self, artifacts: list[dict[str, Any]]) -> None:
        self.artifact_rows = artifacts
        table = self.query_one("#artifacts", DataTable)
        table.clear()
        for a in artifacts:
            table.add_row(plain(a.get("path")), human_size(a.get("size")),
                          plain(str(a.get("sha256", ""))[:16] + "…"), _when(a.get("uploaded_at")))

    def action_download(self) -> None:
        table = self.query_one("#artifacts", DataTable)
        if not self.artifact_rows:
            self.notify("no artifacts to download", severity="warning")
            return
        artifact = self.artifact_rows[min(table.cursor_row, len(self.artifact_rows) - 1)]
        self.post_message(DownloadRequested(self.task_id, artifact))

    def action_raw(self) -> None:
        self.show_raw = not self.show_raw
        self.refresh_task()
