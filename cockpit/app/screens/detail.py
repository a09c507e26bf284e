"""A task's detail: spec, timestamps, resource use, artifacts and its messages.

The text part is a pure function of the task dict, the clock and the output
bytes received so far, so the snapshot tests pin it. The screen reads the
shared `CockpitState` it is given and asks the app for the rest by message:
`ArtifactsRequested` when it opens (the app's worker answers with
`show_artifacts`), `DownloadRequested` on `d`.

It is live: the app calls `refresh_task` when a change to the task (state,
exit code, sizes) or its output bytes arrive, so nothing needs reopening; its
own 1 s timer only moves the elapsed clock of a running task.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from dragoon.cockpit.app.messages import ArtifactsRequested, DownloadRequested
from dragoon.cockpit.app.state import CockpitState, number, task_elapsed, task_is_final
from dragoon.cockpit.formatting import format_duration, human_size, message_text
from dragoon.cockpit.safe_text import clean, plain
from dragoon.cockpit.theme import task_icon, task_style
from dragoon.cockpit.waiting import describe as describe_waiting
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


Received = Callable[[str], Mapping[str, int] | None]  # task id -> output bytes followed so far


def output_sizes(task: Mapping[str, Any], received: Mapping[str, int] | None) -> tuple[int, int]:
    """The relay's sizes, or the bytes the cockpit has followed if more (a running task's
    record gives its sizes only when the drone closes the log)."""
    got = received or {}
    sizes = []
    for stream in ("stdout", "stderr"):
        size = number(task.get(f"{stream}_size")) or 0
        sizes.append(int(max(size, got.get(stream, 0))))
    return sizes[0], sizes[1]


def task_summary(task: dict[str, Any], now: float,
                 received: Mapping[str, int] | None = None) -> Table:
    """Every value is what a pilot, a drone or the relay wrote: plain safe ``Text``
    (cockpit/safe_text.py), for a str cell of a rich table would be parsed as markup."""
    state = str(task.get("state"))
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Task", plain(task["id"], style="bold"))
    table.add_row("State", plain(f"{task_icon(state)} {state}", style=task_style(state)))
    if state == "queued" and isinstance(task.get("waiting"), dict):  # the relay says why
        table.add_row("Waiting", plain(describe_waiting(task["waiting"], now=now),
                                       style="yellow"))
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
    if task.get("sealed"):  # not opened: never a command the relay could have written
        table.add_row("Command", plain(f"(sealed: {task['sealed']})", style="red"))
    else:
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
    # a finished task ran for finished_at - started_at; a running one so far
    table.add_row("Duration" if task_is_final(task) else "Elapsed",
                  format_duration(elapsed) if elapsed is not None else "-")
    code = task.get("exit_code")
    table.add_row("Exit", plain("-" if code is None and not task.get("signal") else
                                (f"signal {task['signal']}" if task.get("signal") else code)))
    cpu = number(task.get("cpu_seconds"))
    table.add_row("CPU", "-" if cpu is None else f"{cpu:.1f} s")
    table.add_row("Peak RSS", human_size(task.get("peak_rss")))
    stdout, stderr = output_sizes(task, received)
    table.add_row("Output", f"stdout {human_size(stdout)}, stderr {human_size(stderr)}"
                  + ("  (truncated)" if task.get("output_truncated") else "")
                  + ("" if task_is_final(task) else "  (growing)"))
    return table


class TaskDetailScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back", id="detail.back"),
        Binding("d", "download", "Download", id="detail.download"),
        Binding("c", "app.cancel_task", "Cancel task", id="detail.cancel"),
        Binding("y", "raw", "JSON", id="detail.json"),  # k9s: y shows the raw record
        # k9s / less motion: j k the artifact cursor (else scroll), g G top / bottom
        Binding("j", "move(1)", "Down", show=False, id="detail.down"),
        Binding("k", "move(-1)", "Up", show=False, id="detail.up"),
        Binding("g", "edge(False)", "Top", show=False, id="detail.top"),
        Binding("G", "edge(True)", "Bottom", show=False, id="detail.bottom"),
    ]

    def __init__(self, task_id: str, *, state: CockpitState, clock: Callable[[], float],
                 received: Received | None = None) -> None:
        super().__init__()
        self.task_id = task_id
        self.state = state
        self.clock = clock
        self.received = received
        self.artifact_rows: list[dict[str, Any]] = []
        self.show_raw = False
        self.refreshes = 0  # how often the summary was redrawn (tests read it)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail-body"):
            yield Static(id="detail-summary")
            yield Static(Text("Artifacts", style="bold underline"), classes="section")
            yield DataTable(id="artifacts", cursor_type="row")
            yield Static(Text("Messages", style="bold underline"), classes="section")
            yield Static(id="detail-messages")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#artifacts", DataTable)
        table.add_columns("Path", "Size", "SHA-256", "Uploaded")
        self.refresh_task()
        self.post_message(ArtifactsRequested(self.task_id))
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        """Only the elapsed clock moves by itself; everything else is redrawn on news."""
        task = self.state.tasks.get(self.task_id)
        if task is not None and task.get("state") == "running" and not self.show_raw:
            self.refresh_task()

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
            received = self.received(self.task_id) if self.received is not None else None
            summary.update(task_summary(task, self.clock(), received))
        self.refreshes += 1
        messages = [m for m in self.state.messages.values()
                    if m.get("task") == self.task_id]
        text = Text()
        for m in sorted(messages, key=lambda m: int(m["id"])):
            text.append(f"#{clean(m['id'])} ", style="dim")
            text.append(_when(m.get("created_at")) + "  ", style="dim")
            text.append(clean(message_text(m)), style="red" if "error" in m
                        else "" if m.get("acked") else "bold")
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

    def action_move(self, step: int) -> None:
        table = self.query_one("#artifacts", DataTable)
        if table.row_count:
            table.move_cursor(row=max(0, table.cursor_row + step))
        else:
            self.query_one("#detail-body", VerticalScroll).scroll_relative(y=step, animate=False)

    def action_edge(self, bottom: bool) -> None:
        body = self.query_one("#detail-body", VerticalScroll)
        if bottom:
            body.scroll_end(animate=False)
        else:
            body.scroll_home(animate=False)

    def action_raw(self) -> None:
        self.show_raw = not self.show_raw
        self.refresh_task()
