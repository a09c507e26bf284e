"""The command palette (Ctrl+P): every cockpit action, with its `dragoon …` command line.

Showing the CLI equivalent teaches the pilot the scriptable form of what
they just did. The table here is also what `--readonly` filters: an action
that changes something on the relay is marked `changes`. The provider reads
the selection through the small `Selection` protocol, which the app meets,
so this module never imports the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Final, Protocol, cast

from dragoon.cockpit.safe_text import clean
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape


class Selection(Protocol):
    """What the palette reads from the app: the read-only flag and what is selected."""

    readonly: bool

    @property
    def selected_task_id(self) -> str | None: ...

    @property
    def selected_drone(self) -> str | None: ...


@dataclass(frozen=True)
class PaletteAction:
    action: str  # the app's action name, without `action_`
    title: str
    cli: str  # the command line, with {task} and {drone} filled from the selection
    key: str
    changes: bool = False


ACTIONS: Final[tuple[PaletteAction, ...]] = (
    PaletteAction("submit", "Submit a task…", "dragoon submit {drone} -- COMMAND", "x", True),
    PaletteAction("cancel_task", "Cancel the selected task", "dragoon cancel {task}", "c", True),
    PaletteAction("drain", "Drain / undrain the selected drone",
                  "dragoon drain {drone} [--undo]",
                  "D", True),
    PaletteAction("enroll", "Enroll a new drone (mint a join token)…",
                  "dragoon enroll NAME --labels a,b", "e", True),
    PaletteAction("fetch", "Fetch a file from the selected drone…",
                  "dragoon fetch {drone} PATH", "f", False),
    PaletteAction("task_detail", "Open the selected task's detail", "dragoon task {task}",
                  "enter", False),
    PaletteAction("download", "Download an artifact of the selected task…",
                  "dragoon artifact {task} PATH", "d", False),
    PaletteAction("inbox", "Open the inbox", "dragoon inbox", "i", False),
    PaletteAction("filter", "Filter drones / search the log", "dragoon drones | grep …", "/",
                  False),
    PaletteAction("focus('grid')", "Go to the drone grid", "dragoon drones", "1", False),
    PaletteAction("focus('tree')", "Go to the task tree", "dragoon tasks", "2", False),
    PaletteAction("focus('log')", "Go to the log of the selected task",
                  "dragoon logs -f {task}", "3", False),
    PaletteAction("resync", "Resynchronise with the relay", "dragoon drones; dragoon tasks",
                  "ctrl+r", False),
    PaletteAction("help", "Show the keys", "dragoon --help", "?", False),
    PaletteAction("quit", "Quit the cockpit", "", "q", False),
)


def command_line(selection: Selection, action: PaletteAction) -> str:
    task = selection.selected_task_id or "TASK"
    drone = selection.selected_drone or "DRONE"
    return action.cli.format(task=task, drone=drone)


class CockpitCommands(Provider):
    """Matches titles; the help line is the key and the equivalent command.

    Registered by the cockpit app only (its `COMMANDS`), so `self.app` is a `Selection`.
    """

    @property
    def selection(self) -> Selection:
        return cast(Selection, self.app)

    def _actions(self) -> list[PaletteAction]:
        readonly = self.selection.readonly
        return [a for a in ACTIONS if not (readonly and a.changes)]

    def _help(self, action: PaletteAction) -> str:
        """Textual reads a hit's help as markup: the selected task and drone are the relay's
        words, so the line is made safe (cockpit/safe_text.py) and escaped."""
        line = command_line(self.selection, action)
        key = f"key {action.key}"
        return escape(clean(f"{key}  ·  {line}" if line else key))

    async def _run(self, action: PaletteAction) -> None:
        await self.app.run_action(action.action)

    async def discover(self) -> Hits:
        for action in self._actions():
            yield DiscoveryHit(action.title, partial(self._run, action), help=self._help(action))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for action in self._actions():
            score = max(matcher.match(action.title), matcher.match(action.cli) * 0.8)
            if score > 0:
                yield Hit(score, matcher.highlight(action.title), partial(self._run, action),
                          text=action.title, help=self._help(action))
