"""SVG snapshots of the cockpit's screens, from fixed data and a fixed clock.

The data comes from `FixedSource` (no network), the clock is pinned, input
cursors do not blink, and every screenshot is taken once the first snapshot
has been applied and the log pane has painted, so the SVGs are byte-stable.
Every screen is pinned at 80x24 (nothing essential may be cut there) and 200x50.
Update them with `pytest tests/cockpit --snapshot-update` and look at them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import pytest
from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.screens.detail import TaskDetailScreen
from dragoon.cockpit.app.screens.dialogs import OverwriteScreen
from textual.pilot import Pilot
from textual.widgets import Input

from tests.cockpit.fixed_source import FixedSource, demo_log, fixed_clock
from tests.cockpit.waiting import until

SELECTED = "t-0000000000"


def make_app(*, readonly: bool = False) -> CockpitApp:
    return CockpitApp(FixedSource(), clock=fixed_clock, readonly=readonly, ping_interval=3600)


async def settle(pilot: Pilot[None]) -> None:
    """Wait until every change of the fixed snapshot is on the widgets (on a deadline, not a
    count of pauses: a loaded machine takes longer, and a snapshot must never be early)."""
    app = pilot.app
    assert isinstance(app, CockpitApp)
    await until(pilot, lambda: app.snapshots and not app._pending, what="the snapshot applied")
    app.flush()
    await pilot.pause()
    for screen in app.screen_stack:
        for field in screen.query(Input):
            field.cursor_blink = False


def prepare(*keys: str, select: bool = True,
            after: Iterable[str] = ()) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, CockpitApp)
        await settle(pilot)
        if select:
            app.tree.select_task(SELECTED)
            app.tree.focus()
            await pilot.pause()
            app.attach_log(SELECTED)
            view = app.log_view
            whole = {stream: len(data) for stream, data in demo_log().items()}
            # every byte of both streams in, and the followed log at its end, before a
            # dialog covers the main screen (behind one it is not repainted)
            await until(pilot, lambda: view.buffer.received == whole, what="the whole log")
            view._flush(force=True)
            await until(pilot, lambda: view.line_count == len(view.buffer)
                        and view.max_scroll_y and view.scroll_y == view.max_scroll_y,
                        what="the log at its end")
            await pilot.pause()
        await pilot.press(*keys)
        await settle(pilot)
        await pilot.press(*after)
        await settle(pilot)

    return run_before


SIZES = pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])


@SIZES
def test_main_screen_grid_tree_and_log(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=prepare())


@SIZES
def test_main_screen_readonly_hides_changing_actions(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(readonly=True), terminal_size=size, run_before=prepare())


@SIZES
def test_task_detail_screen(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=prepare("enter"))


@SIZES
def test_inbox_screen(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=prepare("i"))


@SIZES
def test_submit_dialog(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size,
                        run_before=prepare("1", "x", after=list("echo hi")))


@SIZES
def test_enroll_dialog(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size,
                        run_before=prepare("e", after=list("gpu-9")))


@SIZES
def test_cancel_confirmation(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=prepare("c"))


@SIZES
def test_overwrite_confirmation(snap_compare, size: tuple[int, int], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    # a relative download directory in a temporary cwd: its name is the same every run
    monkeypatch.chdir(tmp_path)
    downloads = Path("downloads")
    downloads.mkdir()
    (downloads / "model.pt").write_text("mine")
    app = CockpitApp(FixedSource(), clock=fixed_clock, ping_interval=3600,
                     download_dir=downloads)

    async def run_before(pilot: Pilot[None]) -> None:
        await prepare("enter")(pilot)
        await until(pilot, lambda: isinstance(pilot.app.screen, TaskDetailScreen)
                    and pilot.app.screen.artifact_rows, what="the artifacts")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(pilot.app.screen, OverwriteScreen),
                    what="the overwrite question")
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_command_palette_shows_cli_equivalents(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size,
                        run_before=prepare("ctrl+p", after=list("cancel")))


@SIZES
def test_help_screen(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=prepare("question_mark"))


@SIZES
def test_grid_filtered_and_sorted_by_cpu(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size,
                        run_before=prepare("1", "s", "s", "s", "slash", after=list("a100")))
