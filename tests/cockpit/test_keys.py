"""The cockpit's keys read like k9s and less, and its layout fits 80x24 and fills 200x50.

Pilot over fixed data: each test presses the keys a pilot would and checks what moved.
(Downloads onto an existing file against a real relay are in test_live.py.)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.palette import ACTIONS
from dragoon.cockpit.app.screens.detail import TaskDetailScreen
from dragoon.cockpit.app.screens.dialogs import (
    ConfirmScreen,
    OverwriteScreen,
    PromptScreen,
    save_name_problem,
)
from dragoon.cockpit.app.screens.help import HelpScreen
from dragoon.cockpit.app.screens.inbox import InboxScreen
from dragoon.cockpit.app.widgets.fleet.drone_grid import column_widths
from rich.console import Console
from textual.widgets import Input, Static

from tests.cockpit.fixed_source import NOW, FixedSource, fixed_clock, make_task
from tests.cockpit.waiting import showing, until

pytestmark = pytest.mark.anyio

SMALL = (80, 24)
LARGE = (200, 50)
TASK = "t-0000000000"  # running on gpu-00, the grid's first drone


def make_app(source: FixedSource | None = None, **kw: Any) -> CockpitApp:
    return CockpitApp(source or FixedSource(), clock=fixed_clock, ping_interval=3600, **kw)


async def loaded(pilot: Any) -> CockpitApp:
    app = pilot.app
    await until(pilot, lambda: app.snapshots and not app._pending and app._log_task,
                what="the fixed snapshot on screen")
    return app  # type: ignore[no-any-return]


def text_of(widget: Static) -> str:
    """What a Static shows, as plain text."""
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(widget.content)
    return console.export_text()


def header(app: CockpitApp) -> dict[str, str]:
    return {str(key.value): column.label.plain for key, column in app.grid.columns.items()}


# ---------------------------------------------------------------------------- d


def bound_keys(app: CockpitApp, screen: Any = None) -> dict[str, str]:
    """key -> action of what the app and the main screen's widgets bind."""
    keys: dict[str, str] = {}
    for owner in (app, app.grid, app.tree, app.log_view):
        for binding in owner._bindings.key_to_bindings.values():
            for b in binding:
                keys.setdefault(b.key, b.action)
    return keys


async def test_every_key_the_palette_and_help_list_is_bound_to_its_action() -> None:
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        await loaded(pilot)
        keys = bound_keys(app)
        names = {"/": "slash", "?": "question_mark"}
        for action in ACTIONS:
            if action.key == "enter":  # the tree's Enter opens the detail
                assert app.tree._bindings.key_to_bindings["enter"][0].action == "select_cursor"
                continue
            assert keys.get(names.get(action.key, action.key)) == action.action, action


async def test_d_opens_the_detail_on_the_main_screen_and_downloads_there(
        tmp_path: Path) -> None:
    source = FixedSource()
    app = make_app(source, download_dir=tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        app.tree.focus()
        await until(pilot, lambda: app.tree.selected_task_id == TASK, what="the cursor")
        await pilot.press("d")
        await until(pilot, lambda: showing(app, TaskDetailScreen)
                    and app.screen.artifact_rows, what="the detail and its artifacts")
        await pilot.press("d")
        await until(pilot, lambda: source.saved, what="the download")
        assert source.saved == [(tmp_path / "model.pt", False)]
        # the file is there now: d asks, and cancel leaves it as it is
        await pilot.press("d")
        await until(pilot, lambda: showing(app, OverwriteScreen), what="the ask")
        await pilot.press("escape")
        await until(pilot, lambda: showing(app, TaskDetailScreen), what="back")
        assert len(source.saved) == 1
        # the palette's download runs the same from the detail
        await app.run_action("download")
        await until(pilot, lambda: showing(app, OverwriteScreen), what="the ask")
        await pilot.press("o")
        await until(pilot, lambda: len(source.saved) == 2, what="the forced download")
        assert source.saved[-1] == (tmp_path / "model.pt", True)


def test_a_name_to_save_under_is_one_file_name() -> None:
    assert save_name_problem("model-2.pt") is None
    for bad in ("", "..", "a/b", "x\x1b[2J"):
        assert save_name_problem(bad) is not None, bad


async def test_another_name_for_a_download_is_asked_and_checked(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_text("mine")
    source = FixedSource()
    app = make_app(source, download_dir=tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        app.push_screen(app._detail(TASK))
        await until(pilot, lambda: showing(app, TaskDetailScreen)
                    and app.screen.artifact_rows, what="the detail")
        await pilot.press("d")
        await until(pilot, lambda: showing(app, OverwriteScreen), what="the ask")
        await pilot.press("a")
        await until(pilot, lambda: showing(app, PromptScreen), what="the prompt")
        field = app.screen.query_one(Input)
        field.value = "../elsewhere.pt"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)  # refused, with the reason shown
        field.value = "model-2.pt"
        await pilot.press("enter")
        await until(pilot, lambda: source.saved, what="the download")
        assert source.saved == [(tmp_path / "model-2.pt", False)]
        assert (tmp_path / "model.pt").read_text() == "mine"


# ---------------------------------------------------------------------------- motion


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
async def test_j_k_g_G_move_in_the_grid(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        app.grid.focus()
        await pilot.press("j", "j")
        assert app.grid.cursor_row == 2
        await pilot.press("k")
        assert app.grid.cursor_row == 1
        await pilot.press("G")
        assert app.grid.cursor_row == app.grid.row_count - 1
        await pilot.press("g")
        assert app.grid.cursor_row == 0


async def test_j_k_g_G_move_in_the_task_tree() -> None:
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        tree = app.tree
        tree.focus()
        await until(pilot, lambda: tree.selected_task_id == TASK, what="the cursor")
        line = tree.cursor_line
        # Each key's effect is waited for (with a deadline), not assumed done by the press:
        # under load the app's refresh may land after the press returns.
        await pilot.press("j")
        await until(pilot, lambda: tree.cursor_line == line + 1, what="j")
        assert tree.selected_task_id == "t-0000000009"  # gpu-00's other running task
        await pilot.press("k")
        await until(pilot, lambda: tree.cursor_line == line, what="k")
        await pilot.press("G")
        await until(pilot, lambda: tree.cursor_line == tree.last_line, what="G")
        await pilot.press("g")
        await until(pilot, lambda: tree.cursor_line == 0, what="g")


async def test_j_k_g_G_scroll_the_log_and_G_follows_again() -> None:
    lines = b"".join(b"line %d\n" % i for i in range(300))
    app = make_app(FixedSource(logs={"stdout": lines}))
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        view = app.log_view
        await until(pilot, lambda: view.line_count == 300, what="the log")
        # Settled at the end (following) before the keys, so no late scroll of the load
        # lands after them; each key's effect is then waited for with a deadline.
        await until(pilot, lambda: view.max_scroll_y > 0 and view.scroll_y == view.max_scroll_y,
                    what="the log scrolled to its end")
        view.focus()
        await pilot.press("g")
        await until(pilot, lambda: view.scroll_y == 0 and not view.follow, what="g")
        await pilot.press("j", "j")
        await until(pilot, lambda: view.scroll_y == 2, what="j j")
        await pilot.press("k")
        await until(pilot, lambda: view.scroll_y == 1, what="k")
        await pilot.press("G")
        await until(pilot, lambda: view.follow and view.scroll_y == view.max_scroll_y,
                    what="G")
        view.append("stdout", b"one more\n")
        view._flush()
        await until(pilot, lambda: view.line_count == 301
                    and view.scroll_y == view.max_scroll_y,
                    what="following: the new line shows")


async def test_the_inbox_moves_with_j_k_and_jumps_with_enter() -> None:
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        await pilot.press("i")
        await until(pilot, lambda: showing(app, InboxScreen), what="the inbox")
        inbox = app.screen
        assert isinstance(inbox, InboxScreen)
        assert inbox.selected_id == 2
        await pilot.press("j")
        assert inbox.selected_id == 1
        await pilot.press("g")
        assert inbox.selected_id == 2
        await pilot.press("G", "enter")  # message 1 is about t-0000000000
        await until(pilot, lambda: app.screen is app.main, what="the jump")
        assert app.tree.selected_task_id == TASK


# ---------------------------------------------------------------------------- filter, sort


async def test_escape_clears_the_filter_and_leaves_the_field() -> None:
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        field = app.main.query_one("#filter", Input)
        app.grid.focus()
        pane = app.main.query_one("#grid-pane")
        await pilot.press("slash", *"a100")
        await pilot.pause()
        assert app.grid.row_count == 3 and field.has_focus
        assert "/a100" in str(pane.border_title) and "3 of 6" in str(pane.border_title)
        await pilot.press("escape")
        await pilot.pause()
        assert app.grid.row_count == 6 and field.value == "" and not field.has_focus
        assert pane.border_title == "drones"
        assert app.grid.has_focus and not field.has_class("open")
        # Enter keeps the filter; Escape on the filtered grid then clears it
        await pilot.press("slash", *"offline", "enter")
        await pilot.pause()
        assert app.grid.row_count == 1 and app.grid.has_focus
        await pilot.press("escape")
        await pilot.pause()
        assert app.grid.row_count == 6 and app.grid.query_text == ""


async def test_the_sorted_column_carries_an_arrow() -> None:
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        assert header(app)["name"] == "Drone ▲"
        app.grid.focus()
        await pilot.press("s")
        await pilot.pause()
        labels = header(app)
        assert labels["state"] == "State ▲" and labels["name"] == "Drone"
        await pilot.press("S")
        await pilot.pause()
        assert header(app)["state"] == "State ▼"


# ---------------------------------------------------------------------------- detail


async def test_the_task_detail_is_live() -> None:
    now = [NOW]
    source = FixedSource()
    app = CockpitApp(source, clock=lambda: now[0], ping_interval=3600)
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        app.push_screen(app._detail(TASK))
        await until(pilot, lambda: showing(app, TaskDetailScreen), what="the detail")
        detail = app.screen
        assert isinstance(detail, TaskDetailScreen)
        await until(pilot, lambda: detail.refreshes and detail.query("#detail-summary"),
                    what="the detail drawn")  # mounted, not only refreshed, under load
        summary = detail.query_one("#detail-summary", Static)
        assert "10m00s" in text_of(summary)  # started 600 s before NOW
        # the elapsed clock ticks by itself
        now[0] = NOW + 5
        await until(pilot, lambda: "10m05s" in text_of(summary), what="the tick")
        # output bytes followed by the cockpit show at once
        await until(pilot, lambda: "stdout 2.2 KiB" in text_of(summary), what="the sizes")
        # the task ends: state, exit code and duration come from the event, not a reopen
        finished = make_task(0, "failed", "gpu-00", finished_at=NOW - 100)
        source.events_queue.put_nowait(("task", finished))
        await until(pilot, lambda: "failed" in text_of(summary), what="the event")
        shown = text_of(summary)
        assert "Exit        1" in shown and "Duration    8m20s" in shown
        assert app.screen is detail
        refreshes = detail.refreshes
        now[0] = NOW + 60
        await pilot.pause(1.3)  # a finished task's detail does not tick
        assert detail.refreshes == refreshes


async def test_the_cancel_confirmation_names_the_task_its_drone_and_command() -> None:
    source = FixedSource()
    source.fixed.tasks[0]["name"] = "lr [bold]sweep\x1b[2J"
    app = make_app(source)
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        app.tree.focus()
        await until(pilot, lambda: app.tree.selected_task_id == TASK, what="the cursor")
        await pilot.press("c")
        await until(pilot, lambda: showing(app, ConfirmScreen), what="confirm")
        shown = text_of(app.screen.query_one("#confirm-details", Static))
        assert "lr [bold]sweep␛[2J" in shown  # safe text: no markup, no escape
        assert "gpu-00" in shown and "python train.py --lr 3e-0 --seed 0" in shown
        assert "\x1b" not in shown
        await pilot.press("n")


# ---------------------------------------------------------------------------- layout


def test_grid_columns_fit_80_columns_and_grow_wider() -> None:
    for width in (77, 78, 100, 198):
        widths, _ = column_widths(width)
        assert sum(widths.values()) + 2 * len(widths) <= width, width
    small, bar = column_widths(77)
    assert bar == 2 and small["tasks"] == 7
    large, bar = column_widths(197)
    assert bar == 6 and large["labels"] > small["labels"]


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
async def test_the_grid_takes_the_rows_its_drones_need(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        await pilot.pause()
        pane = app.main.query_one("#grid-pane")
        assert pane.outer_size.height == 6 + 1 + 2  # six drones, the header, the border
        assert app.grid.virtual_size.width <= app.grid.size.width  # no column cut
        lower = app.main.query_one("#lower")
        assert lower.outer_size.height == size[1] - 2 - pane.outer_size.height  # bar, footer aside
        assert app.grid.show_horizontal_scrollbar is False
        assert app.grid.show_vertical_scrollbar is False


async def test_the_tree_opens_on_the_selected_drones_newest_task() -> None:
    source = FixedSource()
    # gpu-00's newest task is a finished one (in a collapsed group); the newest running
    # task of all is elsewhere: the tree still opens on gpu-00's
    newest = make_task(60, "succeeded", "gpu-00", created_at=NOW - 10, started_at=NOW - 9,
                       finished_at=NOW - 5)
    source.fixed.tasks.append(newest)
    app = make_app(source)
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        assert app.grid.selected_name == "gpu-00"
        await until(pilot, lambda: app.tree.selected_task_id == newest["id"],
                    what="the cursor on gpu-00's newest task")
        assert app._log_task == newest["id"]
        assert "4s" in str(app.tree.cursor_node.label)  # its duration, not the clock's


async def test_help_fits_80x24_and_scrolls() -> None:
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: showing(app, HelpScreen), what="help")
        box = app.screen.query_one("#help")
        assert box.region.right <= SMALL[0] and box.region.bottom <= SMALL[1]
        assert box.max_scroll_y > 0
        await pilot.press("j")
        await pilot.pause()
        assert box.scroll_y == 1
        await pilot.press("G")
        await pilot.pause()
        assert box.scroll_y == box.max_scroll_y


async def test_the_logs_scrollbar_thumb_is_where_the_view_is() -> None:
    """The log followed its end before it overflowed: the scrollbar that then appears must
    not draw its thumb at the top (a stray mark) while the view shows the end."""
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        await loaded(pilot)
        view = app.log_view
        await until(pilot, lambda: view.line_count == 61 and view.max_scroll_y
                    and view.scroll_y == view.max_scroll_y, what="the log at its end")
        await pilot.pause()
        assert view.show_vertical_scrollbar
        assert view.vertical_scrollbar.position == view.scroll_y
