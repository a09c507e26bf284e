"""The pilot side's one colour scheme: how a task, drone or link state looks, wherever it shows.

`dragoon tasks` and the cockpit's task tree must not paint `failed` in two
different reds, so the CLI tables (cockpit/cli/render.py) and the Textual app
(cockpit/app/) both read their state styles and icons from here. Styles are
rich style strings ("bold red", "rgb(255,135,135)"); this module imports
neither rich nor Textual, so a CLI verb that prints plain text pays nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

TASK_STYLES: Final[Mapping[str, str]] = MappingProxyType({
    "queued": "grey62",
    "dispatched": "cyan",
    "running": "bold dodger_blue1",
    "succeeded": "green",
    "failed": "bold red",
    "timed_out": "dark_orange",
    "cancelled": "yellow",
    "lost": "magenta",
})
TASK_ICONS: Final[Mapping[str, str]] = MappingProxyType({
    "queued": "◷", "dispatched": "➜", "running": "▶", "succeeded": "✔", "failed": "✘",
    "timed_out": "⌛", "cancelled": "⊘", "lost": "?",
})
UNKNOWN_ICON: Final = "·"

# `draining` is not a state the relay stores (it is a flag of an online
# drone), but the grid and `dragoon drones` show it as one.
DRONE_STYLES: Final[Mapping[str, str]] = MappingProxyType({
    "online": "green",
    "draining": "yellow",
    "pending": "grey62",
    "offline": "red",
})

# The relay link as the connection bar shows it, keyed by `messages.Link` values.
LINK_STYLES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType({
    "connected": ("●", "bold green"),
    "connecting": ("◌", "bold yellow"),
    "reconnecting": ("⟳", "bold black on yellow"),
    "login needed": ("⚿", "bold white on red"),
})

STDERR_STYLE: Final = "rgb(255,135,135)"  # a task's stderr, in the log pane and its title


def task_style(state: str) -> str:
    return TASK_STYLES.get(state, "")


def task_icon(state: str) -> str:
    return TASK_ICONS.get(state, UNKNOWN_ICON)


def state_style(status: str) -> str:
    """The style of a task or drone state as shown: `running`, `offline 7m`, `online (draining)`.

    An exact state wins; a drone that drains looks draining whatever else the
    text says; otherwise the first word decides (`offline 7m` is offline).
    """
    exact = TASK_STYLES.get(status) or DRONE_STYLES.get(status)
    if exact:
        return exact
    if "draining" in status:
        return DRONE_STYLES["draining"]
    first = status.split(" ", 1)[0]
    return TASK_STYLES.get(first) or DRONE_STYLES.get(first, "")


def load_style(percent: float) -> str:
    """CPU, memory or GPU load: green, yellow from 70 %, red from 90 %."""
    if percent >= 90:
        return "red"
    if percent >= 70:
        return "yellow"
    return "green"
