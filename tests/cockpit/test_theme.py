"""One colour scheme and one set of formatting helpers for the CLI and the cockpit."""

from __future__ import annotations

from dragoon.cockpit import theme
from dragoon.cockpit.app.widgets.fleet.drone_grid import drone_cell
from dragoon.cockpit.app.widgets.tasks.task_tree import state_label, task_label
from dragoon.cockpit.formatting import human_size, relative_time
from dragoon.shared.models import TaskState

from tests.cockpit.fixed_source import NOW, make_drone, make_task


def test_every_task_state_has_a_style_and_an_icon() -> None:
    for state in TaskState:
        assert theme.task_style(state.value), state
        assert theme.task_icon(state.value) != theme.UNKNOWN_ICON, state
    assert theme.task_icon("no-such-state") == theme.UNKNOWN_ICON


def test_the_task_tree_paints_states_from_the_theme() -> None:
    for i, state in enumerate(("running", "failed", "timed_out", "queued")):
        label = task_label(make_task(i, state, "gpu-00"), NOW)
        assert label.plain.startswith(theme.TASK_ICONS[state])
        assert label.spans[0].style == theme.TASK_STYLES[state]
        group = state_label(state, 3)
        assert group.style == theme.TASK_STYLES[state]


def test_the_grid_paints_drone_states_from_the_theme() -> None:
    cells = {
        "online": drone_cell(make_drone(0), "state", NOW),
        "draining": drone_cell(make_drone(1, draining=True), "state", NOW),
        "offline": drone_cell(make_drone(2, state="offline"), "state", NOW),
        "pending": drone_cell(make_drone(3, state="pending"), "state", NOW),
    }
    for state, cell in cells.items():
        assert cell.style == theme.DRONE_STYLES[state], state  # type: ignore[union-attr]
    assert str(cells["offline"]).startswith("offline ")


def test_state_style_reads_the_state_as_shown() -> None:
    assert theme.state_style("failed") == theme.TASK_STYLES["failed"]
    assert theme.state_style("offline 7m") == theme.DRONE_STYLES["offline"]
    assert theme.state_style("online (draining)") == theme.DRONE_STYLES["draining"]
    assert theme.state_style("mystery") == ""


def test_load_colours_step_at_70_and_90_percent() -> None:
    assert [theme.load_style(p) for p in (10, 70, 89.9, 90)] == ["green", "yellow", "yellow",
                                                                  "red"]


def test_relative_time_says_ago_or_in_and_dash_for_none() -> None:
    assert relative_time(None) == "-"
    assert relative_time(100.0, now=225.0) == "2m05s ago"
    assert relative_time(400.0, now=160.0) == "in 4m00s"


def test_sizes_use_binary_units_up_to_gib() -> None:
    assert human_size(None) == "-"
    assert human_size(512) == "512 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(5 << 40) == "5120.0 GiB"
