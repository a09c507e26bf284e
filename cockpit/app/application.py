"""`dragoon cockpit`: the Textual app that ties the data source to the widgets.

Data flow: workers (the sync stream, the round-trip probe, one log follower
per stream of an attached task) run on the app's event loop and never touch
widgets. They fold relay news into `CockpitState`, which returns typed
changes; those wait in `_pending` and a 10 Hz tick coalesces them
(`state.coalesce`) and applies them to the grid, tree and inbox inside one
`batch_update()`. So a burst of a thousand metric reports costs one repaint,
and a relay that is slow or gone only ever slows a worker, never the screen.

Screens do not call the app: they post requests (`messages.AckRequested`,
`TaskJumpRequested`, `ArtifactsRequested`, `DownloadRequested`) that bubble
up to the handlers here, and read the one `CockpitState` they are given.

Health: the probe is the authority on the link. When it fails the bar says
reconnecting; when it comes back the sync worker is restarted, which takes a
fresh snapshot (the diff against what we hold is the resync) and reopens the
event stream. An expired session asks for the TOTP code in a dialog.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Final

from dragoon.cockpit.app.live import (
    SESSION_ENDED,
    DataSource,
    Snapshot,
    describe,
    name_taken,
    session_expired,
)
from dragoon.cockpit.app.messages import (
    AckRequested,
    ActionFailed,
    ArtifactsRequested,
    ConnectionStatus,
    DownloadRequested,
    Link,
    RoundTrip,
    TaskJumpRequested,
)
from dragoon.cockpit.app.palette import ACTIONS, CockpitCommands
from dragoon.cockpit.app.screens.detail import TaskDetailScreen
from dragoon.cockpit.app.screens.dialogs import (
    ConfirmScreen,
    JoinTokenScreen,
    OverwriteScreen,
    PromptScreen,
    SubmitScreen,
    cancel_details,
    drone_name_problem,
    labels_problem,
    save_name_problem,
)
from dragoon.cockpit.app.screens.help import HelpScreen
from dragoon.cockpit.app.screens.inbox import InboxScreen
from dragoon.cockpit.app.screens.job import JobScreen
from dragoon.cockpit.app.screens.main import MainScreen
from dragoon.cockpit.app.state import (
    Change,
    CockpitState,
    DroneAdded,
    DroneRemoved,
    DroneUpdated,
    JobChanged,
    MessageAdded,
    MessageUpdated,
    TaskAdded,
    TaskUpdated,
    UnreadChanged,
    coalesce,
    wall_clock,
)
from dragoon.cockpit.app.widgets.connection_bar import ConnectionBar
from dragoon.cockpit.app.widgets.fleet.drone_grid import DroneGrid
from dragoon.cockpit.app.widgets.logs.log_buffer import LogBuffer
from dragoon.cockpit.app.widgets.logs.log_view import LogView
from dragoon.cockpit.app.widgets.tasks.task_tree import TaskTree
from dragoon.cockpit.formatting import message_text
from dragoon.cockpit.ordered import follow_in_order
from dragoon.cockpit.safe_text import clean
from dragoon.cockpit.theme import STDERR_STYLE
from dragoon.shared.e2e import E2EError
from dragoon.shared.spec import parse_labels
from rich.text import Text
from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen
from textual.widgets import Input, Static, Tree

FLUSH_INTERVAL: Final = 0.1
LOG_BUFFERS: Final = 8  # attached tasks whose output stays followed and in memory
CHANGING_ACTIONS: Final = frozenset(a.action for a in ACTIONS if a.changes)
# The app's keys that mean something away from the main screen; under a dialog none
# does, so a letter typed there never submits or quits.
DETAIL_ACTIONS: Final = frozenset({"quit", "help", "cancel_task", "download", "inbox", "focus",
                                   "resync"})
INBOX_ACTIONS: Final = frozenset({"quit", "help", "focus", "resync"})
JOB_ACTIONS: Final = frozenset({"quit", "help", "inbox", "focus", "resync"})


class CockpitApp(App[None]):
    """The cockpit. `source` is where data comes from (live relay, or fixed data in tests)."""

    CSS_PATH = "cockpit.tcss"
    # a screen under 36 rows is `-short`: dialogs drop their gaps so their buttons stay on it
    VERTICAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-short"), (36, "-tall")]
    TITLE = "dragoon cockpit"
    COMMANDS: ClassVar = App.COMMANDS | {CockpitCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("slash", "filter", "Filter", id="app.filter"),
        Binding("x", "submit", "Submit", id="app.submit"),
        Binding("c", "cancel_task", "Cancel", id="app.cancel"),
        Binding("D", "drain", "Drain", id="app.drain"),
        Binding("f", "fetch", "Fetch", show=False, id="app.fetch"),
        Binding("d", "download", "Download", show=False, id="app.download"),
        Binding("e", "enroll", "Enroll", show=False, id="app.enroll"),
        Binding("i", "inbox", "Inbox", id="app.inbox"),
        Binding("1", "focus('grid')", "Drones", show=False, id="app.grid"),
        Binding("2", "focus('tree')", "Tasks", show=False, id="app.tree"),
        Binding("3", "focus('log')", "Log", show=False, id="app.log"),
        Binding("ctrl+r", "resync", "Resync", show=False, id="app.resync"),
    ]

    def __init__(
        self,
        source: DataSource,
        *,
        readonly: bool = False,
        clock: Callable[[], float] = wall_clock,
        ping_interval: float = 5.0,
        download_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.readonly = readonly
        self.clock = clock
        self.ping_interval = ping_interval
        self.download_dir = download_dir or Path.cwd()
        self.state = CockpitState()
        self.link = Link.CONNECTING
        self.snapshots = 0  # how many snapshots were applied (tests and bench read it)
        self._pending: list[Change] = []
        self._output_news: set[str] = set()  # tasks whose followed output grew since a flush
        self._logs: OrderedDict[str, LogBuffer] = OrderedDict()
        self._log_task: str | None = None
        self._filter_target = "grid"
        self._login_open = False
        self._quiet: set[int] = set()

    # ------------------------------------------------------------------ start

    async def on_mount(self) -> None:
        self.main = MainScreen(relay_url=self.source.relay_url, pilot=self.source.pilot,
                               clock=self.clock)
        await self.push_screen(self.main)
        # held, not queried: timers may still fire while the app shuts its screens down
        self._bar = self.main.query_one(ConnectionBar)
        self._grid = self.main.query_one(DroneGrid)
        self._tree = self.main.query_one(TaskTree)
        self._log_view = self.main.query_one(LogView)
        self.bar.readonly = self.readonly
        self.set_interval(FLUSH_INTERVAL, self.flush)
        self.start_sync()
        self.run_worker(self._probe(), group="probe", exclusive=True, name="probe")

    async def on_unmount(self) -> None:
        for buffer in self._logs.values():
            buffer.close()
        await self.source.aclose()

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Every toast of the cockpit (screens' too: theirs come here) as safe text, not markup.

        A toast often quotes a drone, a task or the relay (a message's text, an
        error's detail, an artifact's path), so it is cleaned by cockpit/safe_text.py
        and never parsed as markup, whatever the caller asked.
        """
        super().notify(clean(message), title=clean(title), severity=severity, timeout=timeout,
                       markup=False)

    @property
    def bar(self) -> ConnectionBar:
        return self._bar

    @property
    def grid(self) -> DroneGrid:
        return self._grid

    @property
    def tree(self) -> TaskTree:
        return self._tree

    @property
    def log_view(self) -> LogView:
        return self._log_view

    # ------------------------------------------------------------------ workers

    def start_sync(self) -> None:
        """(Re)start the snapshot + event stream worker; an older one is cancelled."""
        self.run_worker(self._sync(), group="sync", exclusive=True, name="sync")

    def _set_link(self, link: Link, detail: str = "") -> None:
        self.link = link
        self.post_message(ConnectionStatus(link, detail))

    async def _sync(self) -> None:
        try:
            snapshot = await self.source.snapshot()
        except Exception as error:
            await self._connection_failed(error)
            return
        self._apply_snapshot(snapshot)
        self._set_link(Link.CONNECTED)

        def on_retry(error: BaseException) -> None:
            if self.link is Link.CONNECTED:
                self._set_link(Link.RECONNECTING, describe(error))

        try:
            async for kind, data in self.source.events(on_retry):
                if kind == "snapshot":  # the relay could not replay what was missed
                    self._apply_snapshot(Snapshot(**data))
                    continue
                self._queue(self.state.apply_event(kind, data))
        except Exception as error:
            await self._connection_failed(error)

    def _apply_snapshot(self, snapshot: Snapshot) -> None:
        changes = self.state.apply_snapshot(drones=snapshot.drones, tasks=snapshot.tasks,
                                            messages=snapshot.messages, jobs=snapshot.jobs)
        # messages already waiting are listed in the inbox, not announced one by one
        self._quiet.update(c.message_id for c in changes if isinstance(c, MessageAdded))
        self._queue(changes)
        self.snapshots += 1

    async def _connection_failed(self, error: BaseException) -> None:
        if session_expired(error):
            self._set_link(Link.LOGIN_NEEDED, SESSION_ENDED)
        else:
            self._set_link(Link.RECONNECTING, describe(error))

    async def _probe(self) -> None:
        """Round-trip probe; rescheduled after each answer, faster while the relay is away."""
        while True:
            try:
                rtt = await self.source.ping()
            except Exception as error:
                await self._connection_failed(error)
                if self.link is Link.LOGIN_NEEDED:
                    await self._login()
            else:
                self.post_message(RoundTrip(rtt))
                if self.link is not Link.CONNECTED:
                    self.start_sync()  # the relay is back: resnapshot, reopen the stream
            await asyncio.sleep(self.ping_interval if self.link is Link.CONNECTED
                                else min(1.0, self.ping_interval))

    async def _login(self) -> None:
        if self._login_open:
            return
        self._login_open = True
        try:
            code = await self.push_screen_wait(
                PromptScreen("Session ended: enter your TOTP code to log in again",
                             placeholder="123456", password=True))
            if not code:
                return
            await self.source.login(code)
            self.notify("logged in again")
            self.start_sync()
        except Exception as error:
            self.notify(f"login failed: {describe(error)}", severity="error")
        finally:
            self._login_open = False

    # ------------------------------------------------------------------ changes → widgets

    def _queue(self, changes: Iterable[Change]) -> None:
        self._pending.extend(changes)

    def flush(self) -> None:
        """Apply every pending change to the widgets in one batch (called at 10 Hz)."""
        if self._output_news and self._grid.is_attached:
            news, self._output_news = self._output_news, set()
            for screen in self._detail_screens():
                if screen.task_id in news:
                    screen.refresh_task()
        if not self._pending or not self._grid.is_attached:
            return
        changes = coalesce(self._pending)
        self._pending = []
        drones = [c for c in changes if isinstance(c, DroneAdded | DroneUpdated | DroneRemoved)]
        tasks = [c for c in changes if isinstance(c, TaskAdded | TaskUpdated | JobChanged)]
        messages = [c for c in changes if isinstance(c, MessageAdded | MessageUpdated
                                                         | UnreadChanged)]
        with self.batch_update():
            if drones:
                self.grid.apply(drones)
                if self.grid.query_text:
                    self._show_filter()
            if tasks:
                self.tree.apply(tasks)
            for change in changes:
                if isinstance(change, UnreadChanged):
                    self.bar.unread = change.count
                elif isinstance(change, MessageAdded) and change.message_id not in self._quiet:
                    m = change.message
                    self.notify(message_text(m), title=f"✉ {m.get('task')}", timeout=4)
            self.bar.counts = self._counts()
            self._refresh_screens(tasks, messages)
        if self._log_task is None and self.state.tasks:
            self._select_first_task()

    def _select_first_task(self) -> None:
        """On opening, the tree's cursor is on the selected drone's newest task (else the
        newest running task, else the newest task), never on a group line; its output shows."""
        mine = self.state.tasks_of(self.selected_drone) if self.selected_drone else []
        if mine:
            task_id = str(mine[0]["id"])
        else:
            tasks = sorted(self.state.tasks.values(),
                           key=lambda t: (t.get("state") == "running", t.get("created_at") or 0))
            task_id = str(tasks[-1]["id"])
        self.tree.select_task(task_id)
        self.attach_log(task_id)

    def _counts(self) -> str:
        drones = self.state.drones.values()
        online = sum(1 for d in drones if d.get("state") == "online")
        running = sum(1 for t in self.state.tasks.values() if t.get("state") == "running")
        return f"drones {online}/{len(self.state.drones)} online · tasks {running} running"

    def _detail_screens(self) -> list[TaskDetailScreen]:
        """Open task details, the one under a dialog too (it is seen again when it closes).

        Only mounted ones: a screen just pushed has no widgets until its mount, which
        draws it from the state anyway; asking it to redraw before then would fail."""
        return [s for s in self.screen_stack if isinstance(s, TaskDetailScreen) and s.is_mounted]

    def _refresh_screens(self, tasks: list[Change], messages: list[Change]) -> None:
        changed = {getattr(c, "task_id", None) for c in tasks}
        for screen in self._detail_screens():
            if messages or screen.task_id in changed:
                screen.refresh_task()
        for inbox in self.screen_stack:
            if isinstance(inbox, InboxScreen) and inbox.is_mounted and messages:
                inbox.refresh_messages()
        jobs = {getattr(c, "job_id", None) for c in tasks} | {
            getattr(c, "task", {}).get("job") for c in tasks}
        for screen in self.screen_stack:
            if isinstance(screen, JobScreen) and screen.is_mounted and (
                    messages or screen.job_id in jobs):
                screen.mark_dirty()

    @on(ConnectionStatus)
    def _show_status(self, message: ConnectionStatus) -> None:
        self.bar.link = message.link
        self.bar.detail = message.detail

    @on(RoundTrip)
    def _show_rtt(self, message: RoundTrip) -> None:
        self.bar.rtt = message.seconds

    @on(ActionFailed)
    def _show_failure(self, message: ActionFailed) -> None:
        self.notify(f"{message.what} failed: {describe(message.error)}", severity="error")
        if session_expired(message.error):
            self._set_link(Link.LOGIN_NEEDED, SESSION_ENDED)

    # ------------------------------------------------------------------ selection

    @property
    def selected_task_id(self) -> str | None:
        screen = self.screen
        if isinstance(screen, TaskDetailScreen):
            return screen.task_id
        return self.tree.selected_task_id if self.main.is_attached else None

    @property
    def selected_drone(self) -> str | None:
        return self.grid.selected_name

    @on(Tree.NodeHighlighted, "#tree")
    def _task_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        if event.node.data:
            self.attach_log(event.node.data)

    @on(Tree.NodeSelected, "#tree")
    def _task_selected(self, event: Tree.NodeSelected[str]) -> None:
        if event.node.data:
            self.push_screen(self._detail(event.node.data))
        elif (job_id := self.tree.job_of(event.node)) is not None:
            self.open_job(job_id)

    def open_job(self, job_id: str) -> None:
        """The job view, then every task of the job read into the state (a snapshot holds
        only the newest tasks); the view redraws when they arrive."""
        self.push_screen(JobScreen(job_id, state=self.state, clock=self.clock))
        self.load_job_tasks(job_id)

    @work(group="jobs")
    async def load_job_tasks(self, job_id: str) -> None:
        try:
            tasks = await self.source.job_tasks(job_id)
        except Exception as error:
            self.post_message(ActionFailed(f"listing the tasks of {job_id}", error))
            return
        for task in tasks:
            self._queue(self.state.upsert_task(task))

    @on(DroneGrid.RowSelected, "#grid")
    def _drone_selected(self, event: DroneGrid.RowSelected) -> None:
        name = event.row_key.value
        for task in self.state.tasks_of(name):
            if self.tree.select_task(str(task["id"])):
                self.tree.focus()
                return

    # ------------------------------------------------------------------ logs

    def attach_log(self, task_id: str) -> None:
        """Show `task_id`'s output from its first byte, and keep following it."""
        if task_id == self._log_task:
            return
        self._log_task = task_id
        buffer = self._logs.get(task_id)
        if buffer is None:
            buffer = LogBuffer()
            self._logs[task_id] = buffer
            self.run_worker(self._follow(task_id, buffer), group=f"log:{task_id}",
                            name=f"log:{task_id}")
            while len(self._logs) > LOG_BUFFERS:
                old_id, old = self._logs.popitem(last=False)
                self.workers.cancel_group(self, f"log:{old_id}")
                old.close()
        self._logs.move_to_end(task_id)
        self.log_view.attach(buffer)
        self._update_log_title()

    async def _follow(self, task_id: str, buffer: LogBuffer) -> None:
        """stdout and stderr into `buffer` in the order the task wrote them (cockpit/ordered.py)."""
        def show(stream: str, data: bytes) -> None:
            buffer.append(stream, data)
            self._output_news.add(task_id)
            if self.log_view.buffer is buffer:
                self.log_view.mark_dirty()

        def follow(stream: str) -> AsyncIterator[bytes]:
            return self.source.follow_log(task_id, stream, 0)  # a new buffer: from the start

        try:
            await follow_in_order(follow, show)
        except E2EError as error:
            # In the pane, where the output stops: nothing past the bad record is shown.
            buffer.note(f"[dragoon: {error.detail}]")
            self._output_news.add(task_id)
            if self.log_view.buffer is buffer:
                self.log_view.mark_dirty()
            self.post_message(ActionFailed(f"following the output of {task_id}", error))
        except Exception as error:
            if not isinstance(error, asyncio.CancelledError):
                self.post_message(ActionFailed(f"following the output of {task_id}", error))

    def _update_log_title(self, follow: bool | None = None) -> None:
        if self._log_task is None:
            return
        follow = self.log_view.follow if follow is None else follow
        text = Text()
        text.append(f" {clean(self._log_task)} ", style="bold")
        text.append("stdout", style="default")
        text.append(" + ")
        text.append("stderr", style=STDERR_STYLE)
        text.append("  ")
        text.append("● following" if follow else "‖ paused (G or End to follow)",
                    style="green" if follow else "yellow")
        self.main.query_one("#log-title", Static).update(text)

    @on(LogView.FollowChanged)
    def _follow_changed(self, event: LogView.FollowChanged) -> None:
        self._update_log_title(event.follow)

    # ------------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`--readonly` hides (and refuses) every action that changes something; away from
        the main screen only the keys that apply there are live (and in the footer)."""
        if self.readonly and action in CHANGING_ACTIONS:
            return False
        if action not in APP_ACTIONS or not hasattr(self, "main"):
            return True
        screen = self.screen
        if screen is self.main:
            return True
        if isinstance(screen, TaskDetailScreen):
            return action in DETAIL_ACTIONS
        if isinstance(screen, JobScreen):
            return action in JOB_ACTIONS
        return not isinstance(screen, ModalScreen) and action in INBOX_ACTIONS

    def action_help(self) -> None:
        self.push_screen(HelpScreen(readonly=self.readonly,
                                    jobs=isinstance(self.screen, JobScreen)))

    def action_focus(self, widget_id: str) -> None:
        if self.screen is not self.main:
            self.pop_screen()
        self.main.query_one(f"#{widget_id}").focus()

    def _detail(self, task_id: str) -> TaskDetailScreen:
        return TaskDetailScreen(task_id, state=self.state, clock=self.clock,
                                received=self._received)

    def _received(self, task_id: str) -> dict[str, int] | None:
        """Output bytes followed so far for a task, if the cockpit follows it."""
        buffer = self._logs.get(task_id)
        return dict(buffer.received) if buffer is not None else None

    def action_inbox(self) -> None:
        if not isinstance(self.screen, InboxScreen):
            self.push_screen(InboxScreen(state=self.state, clock=self.clock,
                                         readonly=self.readonly))

    def action_task_detail(self) -> None:
        task_id = self.selected_task_id
        if task_id:
            self.push_screen(self._detail(task_id))

    def action_resync(self) -> None:
        self.start_sync()

    def action_filter(self) -> None:
        if self.screen is not self.main:
            return
        focused = self.focused
        self._filter_target = "log" if isinstance(focused, LogView) else "grid"
        field = self.main.query_one("#filter", Input)
        field.placeholder = ("search the log (Enter: next match)" if self._filter_target == "log"
                             else "filter drones by name, label or state")
        field.value = self.log_view.query_text if self._filter_target == "log" \
            else self.grid.query_text
        field.add_class("open")
        field.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self._filter_target == "grid":
            self.grid.set_filter(event.value)
            self._show_filter()

    def _show_filter(self) -> None:
        """The grid pane's title says what filters it and how much shows (k9s's `/filter`),
        so a grid that shows nothing is not mistaken for a fleet that has no drones."""
        grid = self.grid
        title = Text("drones")
        if grid.query_text:
            title.append(f"  /{clean(grid.query_text)}", style="bold")
            title.append(f"  {grid.row_count} of {len(grid.drones)}")
        self.main.query_one("#grid-pane").border_title = title

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if self._filter_target == "log":
            if event.value and self.log_view.search(event.value) is None:
                self.notify(f"{event.value!r} not found", severity="warning")
            self.log_view.focus()
        else:
            self.grid.focus()
        self.main.query_one("#filter", Input).remove_class("open")

    def on_key(self, event: Any) -> None:
        """Escape in the `/` field clears the filter (or the search) and leaves the field;
        Escape on a filtered grid clears its filter (k9s)."""
        if event.key != "escape" or self.screen is not self.main:
            return
        field = self.main.query_one("#filter", Input)
        if field.has_focus:
            if self._filter_target == "grid":
                self.clear_filter()
            else:
                self.log_view.query_text = ""
            field.remove_class("open")
            (self.log_view if self._filter_target == "log" else self.grid).focus()
            event.stop()
        elif self.grid.has_focus and self.grid.query_text:
            self.clear_filter()
            event.stop()

    def clear_filter(self) -> None:
        field = self.main.query_one("#filter", Input)
        with field.prevent(Input.Changed):
            field.value = ""
        self.grid.set_filter("")
        self._show_filter()

    @work(group="actions")
    async def action_submit(self) -> None:
        request = await self.push_screen_wait(SubmitScreen(drone=self.selected_drone))
        if request is None:
            return
        try:
            task = await self.source.submit(request.spec, drone=request.drone,
                                            labels=request.labels)
        except Exception as error:
            self.post_message(ActionFailed("submit", error))
            return
        self._queue(self.state.upsert_task(task))
        self.flush()
        self.notify(f"submitted {task['id']}")
        self.tree.select_task(str(task["id"]))
        self.attach_log(str(task["id"]))

    @work(group="actions")
    async def action_cancel_task(self) -> None:
        task_id = self.selected_task_id
        if task_id is None:
            self.notify("select a task first", severity="warning")
            return
        task = self.state.tasks.get(task_id, {})
        if not await self.push_screen_wait(ConfirmScreen(
                f"Cancel task {task_id}?", yes="Cancel task", details=cancel_details(task))):
            return
        try:
            task = await self.source.cancel(task_id)
        except Exception as error:
            self.post_message(ActionFailed(f"cancel {task_id}", error))
            return
        self._queue(self.state.upsert_task(task))
        self.notify(f"cancel requested for {task_id}")

    @work(group="actions")
    async def action_drain(self) -> None:
        name = self.selected_drone
        if name is None:
            return
        draining = bool(self.state.drones.get(name, {}).get("draining"))
        verb = "Undrain" if draining else "Drain"
        if not await self.push_screen_wait(ConfirmScreen(
                f"{verb} drone {name}? " + ("It will take new tasks again." if draining else
                                            "It finishes its tasks but takes no new ones."),
                yes=verb)):
            return
        try:
            drone = await self.source.drain(name, not draining)
        except Exception as error:
            self.post_message(ActionFailed(f"drain {name}", error))
            return
        self._queue(self.state.upsert_drone(drone))

    @work(group="actions")
    async def action_enroll(self) -> None:
        name = await self.push_screen_wait(PromptScreen("Enroll a new drone: its name",
                                                        placeholder="gpu-2",
                                                        validate=drone_name_problem))
        if not name:
            return
        labels_text = await self.push_screen_wait(PromptScreen(
            f"Labels for {name} (comma-separated, optional)", placeholder="gpu,a100",
            validate=labels_problem))
        labels = parse_labels(labels_text or "")  # the prompt refused what this would
        try:
            token = await self.source.enroll(name, labels)
        except Exception as error:
            if (state := name_taken(error)) is None:
                self.post_message(ActionFailed(f"enroll {name}", error))
                return
            # The relay is the judge of "taken" (the fleet view may lag): ask, then replace.
            if not await self.push_screen_wait(ConfirmScreen(
                    f"Drone {name} exists ({state}). Replace it? When the new drone joins, "
                    "the old one stops and its dispatched and running tasks end as lost.",
                    yes="Replace")):
                return
            try:
                token = await self.source.enroll(name, labels, replace=True)
            except Exception as again:
                self.post_message(ActionFailed(f"enroll {name}", again))
                return
        self.push_screen(JoinTokenScreen(name, token))

    @work(group="actions")
    async def action_fetch(self) -> None:
        name = self.selected_drone
        if name is None:
            return
        path = await self.push_screen_wait(PromptScreen(f"Fetch a file from {name}",
                                                        placeholder="/data/run1/metrics.csv"))
        if not path:
            return
        where = await self._choose_destination(
            self.download_dir / clean(f"{name}-{PurePosixPath(path).name}"))
        if where is None:
            return
        dest, force = where
        try:
            saved = await self.source.fetch(name, path, dest, force=force)
        except Exception as error:
            self.post_message(ActionFailed(f"fetch {path}", error))
            return
        self.notify(f"saved {saved}")

    def action_download(self) -> None:
        """`d`: on the main screen, open the task's detail, where its artifacts are listed
        and `d` downloads the selected one (the detail screen's own binding)."""
        screen = self.screen
        if isinstance(screen, TaskDetailScreen):
            screen.action_download()
        elif screen is self.main:
            task_id = self.selected_task_id
            if task_id:
                self.push_screen(self._detail(task_id))
            else:
                self.notify("select a task first", severity="warning")

    async def _choose_destination(self, dest: Path) -> tuple[Path, bool] | None:
        """Where to save, and whether replacing is allowed: a name that exists asks first
        (overwrite / another name / cancel); None when the pilot cancels."""
        while dest.exists():
            choice = await self.push_screen_wait(OverwriteScreen(dest))
            if choice == "overwrite":
                return dest, True
            if choice != "rename":
                return None
            name = await self.push_screen_wait(PromptScreen(
                f"Save as (in {dest.parent})", value=dest.name, validate=save_name_problem))
            if not name:
                return None
            dest = dest.parent / name
        return dest, False

    # ------------------------------------------------------------------ requests from screens

    @on(ArtifactsRequested)
    def _artifacts_requested(self, request: ArtifactsRequested) -> None:
        self.load_artifacts(request.task_id)

    @on(DownloadRequested)
    def _download_requested(self, request: DownloadRequested) -> None:
        self.download_artifact(request.task_id, request.artifact)

    @on(AckRequested)
    def _ack_requested(self, request: AckRequested) -> None:
        self.ack_messages(request.ids)

    @on(TaskJumpRequested)
    def _jump_requested(self, request: TaskJumpRequested) -> None:
        self.jump_to_task(request.task_id)

    @work(group="artifacts")
    async def load_artifacts(self, task_id: str) -> None:
        """List a task's artifacts into every detail screen of it still open."""
        try:
            artifacts = await self.source.artifacts(task_id)
        except Exception as error:
            self.post_message(ActionFailed("listing artifacts", error))
            return
        for screen in self.screen_stack:
            if isinstance(screen, TaskDetailScreen) and screen.task_id == task_id:
                screen.show_artifacts(artifacts)

    @work(group="downloads")
    async def download_artifact(self, task_id: str, artifact: dict[str, Any]) -> None:
        name = clean(PurePosixPath(str(artifact["path"])).name)  # a drone named the file
        if name in ("", ".", ".."):
            self.notify(f"cannot name a file after {artifact['path']!r}", severity="error")
            return
        where = await self._choose_destination(self.download_dir / name)
        if where is None:
            return
        dest, force = where
        try:
            saved = await self.source.download_artifact(task_id, artifact, dest, force=force)
        except Exception as error:
            self.post_message(ActionFailed(f"download {artifact['path']}", error))
            return
        self.notify(f"saved {saved}")

    @work(group="acks")
    async def ack_messages(self, ids: list[int]) -> None:
        """Mark read here at once, then acknowledge on the relay (undone if that fails)."""
        ids = [i for i in ids if not self.state.messages.get(i, {}).get("acked")]
        if not ids:
            return
        self._queue(self.state.mark_acked(ids))
        self.flush()
        try:
            await self.source.ack(ids)
        except Exception as error:
            for i in ids:
                self._queue(self.state.upsert_message({"id": i, "acked": False}))
            self.post_message(ActionFailed("acknowledging messages", error))

    def jump_to_task(self, task_id: str) -> None:
        while self.screen is not self.main:
            self.pop_screen()
        if self.tree.select_task(task_id):
            self.tree.focus()
            self.attach_log(task_id)
        else:
            self.notify(f"{task_id} is not in the task list", severity="warning")


# the action names of the app's own keys (`focus('grid')` is the action `focus`)
APP_ACTIONS: Final = frozenset(
    b.action.split("(")[0] for b in CockpitApp.BINDINGS if isinstance(b, Binding))
