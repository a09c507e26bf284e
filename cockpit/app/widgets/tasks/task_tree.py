"""The task tree: drone → state → task, patched node by node.

Tasks move between state groups as they run; moving one node keeps the rest
of the tree (and what the pilot expanded) as it was. Final-state groups start
collapsed so ten thousand finished tasks cost ten thousand nodes but only a
handful of visible lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final

from dragoon.cockpit.app.state import (
    QUEUED_GROUP,
    Change,
    JobChanged,
    TaskAdded,
    TaskUpdated,
    state_is_final,
    state_rank,
    task_elapsed,
    task_group,
    task_is_final,
    task_title,
)
from dragoon.cockpit.formatting import format_duration
from dragoon.cockpit.safe_text import clean, plain
from dragoon.cockpit.theme import task_icon, task_style
from dragoon.cockpit.trials import job_counts, progress_text
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

_LABEL_FIELDS: Final = frozenset(
    {"state", "name", "spec", "started_at", "finished_at", "exit_code", "signal",
     "cancel_requested", "dispatched_at"}
)


def task_label(task: Mapping[str, Any], now: float) -> Text:
    """`▶ t-3kq9z0m2ab  12m03s  exit 0  lr sweep`

    What the pilot scans for (state, id, how long, how it ended) comes first and
    the title last, so a narrow pane (80 columns) cuts the title, not the duration.
    """
    state = str(task.get("state", "queued"))
    text = Text()
    text.append(f"{task_icon(state)} ", style=task_style(state))
    text.append(clean(task["id"]), style="bold" if state == "running" else "")
    elapsed = task_elapsed(task, now)
    if elapsed is not None:
        text.append(f"  {format_duration(elapsed)}", style="dim")
    if task.get("signal"):
        text.append(f"  sig {clean(task['signal'])}", style="red")
    elif task.get("exit_code") is not None:
        code = clean(task["exit_code"])
        text.append(f"  exit {code}", style="green" if code == "0" else "red")
    if task.get("cancel_requested") and not task_is_final(task):
        text.append("  cancelling…", style="yellow")
    text.append(f"  {task_title(task, 32)}")  # task_title is safe text already
    return text


def job_label(job_id: str, job: Mapping[str, Any] | None,
              tasks: list[Mapping[str, Any]]) -> Text:
    """`▣ lr sweep  j-3kq9z0m2ab  sweep  12✓ 3▶ 85… 1✗`: the job's name (else id), kind and
    progress; its state once final."""
    job = job or {}
    text = Text("▣ ", style="bold")
    text.append(clean(job.get("name") or job_id), style="bold")
    if job.get("name"):
        text.append(f"  {clean(job_id)}", style="dim")
    if job.get("kind"):
        text.append(f"  {clean(job['kind'])}", style="dim")
    text.append(f"  {progress_text(job_counts(job, tasks))}")
    state = job.get("state")
    if state and state != "running":
        text.append(f"  {clean(state)}", style=task_style("succeeded" if state == "succeeded"
                                                          else "failed"))
    return text


def trial_label(task: Mapping[str, Any], now: float) -> Text:
    """A trial's line: `#12` (and `try 2` for a retry) before the task's own label."""
    text = Text(f"#{clean(task.get('trial'))} ", style="bold")
    if task.get("attempt"):
        text.append(f"try {clean(task['attempt'])} ", style="yellow")
    return text + task_label(task, now)


def state_label(state: str, count: int) -> Text:
    text = Text(f"{task_icon(state)} {clean(state)}", style=task_style(state))
    text.append(f" ({count})", style="dim")
    return text


class TaskTree(Tree[str]):
    """Node data is the task id for leaves, '' for groups."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Detail", id="tree.detail"),
        # k9s / less motion: j k move the cursor, g G go to the first / last line
        Binding("j", "cursor_down", "Down", show=False, id="tree.down"),
        Binding("k", "cursor_up", "Up", show=False, id="tree.up"),
        Binding("g", "scroll_home", "Top", show=False, id="tree.top"),
        Binding("G", "scroll_end", "Bottom", show=False, id="tree.bottom"),
    ]

    def __init__(self, *, clock: Callable[[], float], **kwargs: Any) -> None:
        super().__init__("tasks", data="", **kwargs)
        self.show_root = False
        self.guide_depth = 3
        self.clock = clock
        self.tasks: dict[str, dict[str, Any]] = {}
        self._leaves: dict[str, TreeNode[str]] = {}
        self._drone_nodes: dict[str, TreeNode[str]] = {}
        self._state_nodes: dict[tuple[str, str], TreeNode[str]] = {}
        # tasks of a job hang under its node (trial order), not under drone → state
        self.jobs: dict[str, Mapping[str, Any]] = {}
        self._job_nodes: dict[str, TreeNode[str]] = {}
        self._job_of_node: dict[int, str] = {}
        self._job_tasks: dict[str, dict[str, Mapping[str, Any]]] = {}

    def on_mount(self) -> None:
        self.root.expand()
        self.set_interval(1.0, self.tick)

    # ------------------------------------------------------------------ groups

    def watch_show_vertical_scrollbar(self, show: bool) -> None:
        """A scrollbar that appears after the view scrolled (the log followed its end before
        it overflowed) starts at the top: put its thumb where the view is."""
        if show:
            self.vertical_scrollbar.position = self.scroll_y

    def _drone_node(self, drone: str) -> TreeNode[str]:
        node = self._drone_nodes.get(drone)
        if node is None:
            names = sorted(self._drone_nodes)
            before = next((self._drone_nodes[n] for n in names if n > drone), None)
            label = plain(drone, style="bold italic" if drone == QUEUED_GROUP else "bold")
            node = self.root.add(label, data="", before=before, expand=True)
            self._drone_nodes[drone] = node
        return node

    def _state_node(self, drone: str, state: str) -> TreeNode[str]:
        node = self._state_nodes.get((drone, state))
        if node is None:
            parent = self._drone_node(drone)
            rank = state_rank(state)
            later = [(state_rank(s), n) for (d, s), n in self._state_nodes.items()
                     if d == drone and state_rank(s) > rank]
            before = min(later, key=lambda pair: pair[0])[1] if later else None
            node = parent.add(state_label(state, 0), data="", before=before,
                              expand=not state_is_final(state))
            self._state_nodes[(drone, state)] = node
        return node

    def _relabel_group(self, drone: str, state: str) -> None:
        node = self._state_nodes.get((drone, state))
        if node is None:
            return
        if not node.children:
            node.remove()
            del self._state_nodes[(drone, state)]
            parent = self._drone_nodes.get(drone)
            if parent is not None and not parent.children:
                parent.remove()
                del self._drone_nodes[drone]
            return
        node.set_label(state_label(state, len(node.children)))

    def _job_node(self, job_id: str) -> TreeNode[str]:
        """Jobs sit above the drones, newest first; they start collapsed (a 500-trial job
        is one line until opened)."""
        node = self._job_nodes.get(job_id)
        if node is None:
            created = self._created(job_id)
            jobs = len(self._job_nodes)  # job nodes are root's first children, newest first
            at = next((i for i, n in enumerate(self.root.children[:jobs])
                       if self._created(self._job_of_node[int(n.id)]) < created), jobs)
            before_index = at if at < len(self.root.children) else None
            node = self.root.add(job_label(job_id, self.jobs.get(job_id), []), data="",
                                 before=before_index, expand=False)
            self._job_nodes[job_id] = node
            self._job_of_node[int(node.id)] = job_id
            self._job_tasks.setdefault(job_id, {})
        return node

    def _created(self, job_id: str) -> float:
        return float((self.jobs.get(job_id) or {}).get("created_at") or 0)

    def job_of(self, node: TreeNode[str] | None) -> str | None:
        """The job id of a job node, else None."""
        return None if node is None else self._job_of_node.get(int(node.id))

    @property
    def selected_job_id(self) -> str | None:
        return self.job_of(self.cursor_node)

    def _relabel_job(self, job_id: str) -> None:
        node = self._job_nodes.get(job_id)
        if node is not None:
            tasks = list(self._job_tasks.get(job_id, {}).values())
            node.set_label(job_label(job_id, self.jobs.get(job_id), tasks))

    def _add_trial(self, task: Mapping[str, Any], now: float) -> str:
        job_id = str(task["job"])
        group = self._job_node(job_id)
        key = _trial_key(task)
        held = self._job_tasks[job_id]
        held[str(task["id"])] = task
        children = group.children
        before = None
        if children and _trial_key(self.tasks.get(children[-1].data or "", {})) > key:
            before = next(i for i, child in enumerate(children)
                          if _trial_key(self.tasks.get(child.data or "", {})) > key)
        self._leaves[str(task["id"])] = group.add_leaf(trial_label(task, now),
                                                       data=str(task["id"]), before=before)
        return job_id

    # ------------------------------------------------------------------ changes

    def apply(self, changes: Iterable[Change]) -> None:
        now = self.clock()
        touched: set[tuple[str, str]] = set()
        jobs_touched: set[str] = set()
        cursor_id = self.selected_task_id
        for change in changes:
            if isinstance(change, JobChanged):
                self.jobs[change.job_id] = change.job
                self._job_node(change.job_id)
                jobs_touched.add(change.job_id)
            elif isinstance(change, TaskAdded | TaskUpdated) and change.task.get("job"):
                jobs_touched.add(self._apply_trial(change, now))
            elif isinstance(change, TaskAdded):
                self.tasks[change.task_id] = change.task
                touched.add(self._add_leaf(change.task, now))
            elif isinstance(change, TaskUpdated):
                self.tasks[change.task_id] = change.task
                old_group = (str(change.previous_drone or QUEUED_GROUP), change.previous_state)
                new_group = task_group(change.task)
                leaf = self._leaves.get(change.task_id)
                if leaf is None or old_group != new_group:
                    if leaf is not None:
                        leaf.remove()
                        touched.add(old_group)
                    touched.add(self._add_leaf(change.task, now))
                elif change.changed & _LABEL_FIELDS:
                    leaf.set_label(task_label(change.task, now))
        for drone, state in touched:
            self._relabel_group(drone, state)
        for job_id in jobs_touched:
            self._relabel_job(job_id)
        if cursor_id is not None and touched:
            self.call_after_refresh(self._keep_cursor, cursor_id)

    def _apply_trial(self, change: TaskAdded | TaskUpdated, now: float) -> str:
        """A job's task: added under its job, or relabelled in place (trials do not move)."""
        self.tasks[change.task_id] = change.task
        leaf = self._leaves.get(change.task_id)
        if leaf is None:
            return self._add_trial(change.task, now)
        job_id = str(change.task["job"])
        self._job_tasks.setdefault(job_id, {})[change.task_id] = change.task
        if not isinstance(change, TaskUpdated) or change.changed & _LABEL_FIELDS:
            leaf.set_label(trial_label(change.task, now))
        return job_id

    def _keep_cursor(self, task_id: str) -> None:
        """The cursor follows its task when the task moves to another group."""
        node = self._leaves.get(task_id)
        if node is not None and self.cursor_node is not node:
            self._reveal(node)
            self.call_after_refresh(self.move_cursor, node, animate=False)

    @staticmethod
    def _reveal(node: TreeNode[str]) -> None:
        parent = node.parent
        while parent is not None:
            parent.expand()
            parent = parent.parent

    def _add_leaf(self, task: Mapping[str, Any], now: float) -> tuple[str, str]:
        drone, state = task_group(task)
        group = self._state_node(drone, state)
        before = self._position(group, float(task.get("created_at") or 0))
        self._leaves[str(task["id"])] = group.add_leaf(
            task_label(task, now), data=str(task["id"]), before=before
        )
        return drone, state

    def _position(self, group: TreeNode[str], created: float) -> int | None:
        """Where a task goes to keep newest first; the common cases (newest, or
        oldest as a newest-first listing arrives) cost O(1)."""
        children = group.children
        if not children:
            return None

        def created_of(node: TreeNode[str]) -> float:
            return float(self.tasks.get(node.data or "", {}).get("created_at") or 0)

        if created_of(children[-1]) >= created:
            return None
        if created_of(children[0]) < created:
            return 0
        return next(i for i, child in enumerate(children) if created_of(child) < created)

    def tick(self) -> None:
        """Running tasks show elapsed time: relabel those on screen, once a second.

        Only visible lines: ten thousand tasks must not cost ten thousand labels a second.
        """
        now = self.clock()
        top = int(self.scroll_y)
        for line in self._tree_lines[top: top + self.size.height]:
            node = line.node
            task = self.tasks.get(node.data or "") if node.data else None
            if task is not None and task.get("state") == "running":
                node.set_label(trial_label(task, now) if task.get("job")
                               else task_label(task, now))

    @property
    def selected_task_id(self) -> str | None:
        node = self.cursor_node
        return node.data if node is not None and node.data else None

    def select_task(self, task_id: str) -> bool:
        """Put the cursor on the task's line now (its groups opened), never on a group line.

        The tree lays its lines out lazily; reading them lays out what changed, so the
        leaf has its line at once, however many tasks arrived in the same batch.
        """
        node = self._leaves.get(task_id)
        if node is None:
            return False
        self._reveal(node)
        self._move_to(task_id)
        self.call_after_refresh(self._move_to, task_id)  # scroll once the size is known
        return True

    def _move_to(self, task_id: str) -> None:
        """Look the leaf up again: the task may have moved group since it was asked for."""
        node = self._leaves.get(task_id)
        if node is None:
            return
        if node.line < 0:
            self._reveal(node)
            self._tree_lines  # noqa: B018 - laying the lines out gives the leaf its line
        if node.line >= 0:
            self.move_cursor(node, animate=False)


def _trial_key(task: Mapping[str, Any]) -> tuple[int, int]:
    trial, attempt = task.get("trial"), task.get("attempt")
    return (trial if isinstance(trial, int) else -1, attempt if isinstance(attempt, int) else 0)
