"""SVG snapshots of the cockpit's screens, from fixed data and a fixed clock.

The data comes from `FixedSource` (no network), the clock is pinned, input
cursors do not blink, and every screenshot is taken once the first snapshot
has been applied and the log pane has painted, so the SVGs are byte-stable.
Update them with `pytest tests/cockpit --snapshot-update` and look at them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import pytest
from dragoon.cockpit.app.application import CockpitApp
from textual.pilot import Pilot
from textual.widgets import Input

from tests.cockpit.fixed_source import FixedSource, fixed_clock

SELECTED = "t-0000000000"


def make_app(*, readonly: bool = False) -> CockpitApp:
    return CockpitApp(FixedSource(), clock=fixed_clock, readonly=readonly, ping_interval=3600)


async def settle(pilot: Pilot[None]) -> None:
    """Wait until the fixed snapshot and the selected task's log are on screen."""
    app = pilot.app
    assert isinstance(app, CockpitApp)
    for _ in range(100):
        await pilot.pause()
        if app.snapshots and not app._pending:
            break
    app.flush()
    await pilot.pause()
    for field in app.query(Input):
        field.cursor_blink = False
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
            for _ in range(50):
                await pilot.pause()
                if len(app.log_view.buffer) >= 61:
                    break
            app.log_view._flush(force=True)
        await pilot.press(*keys)
        await settle(pilot)
        await pilot.press(*after)
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", [(160, 48), (100, 30)], ids=["160x48", "100x30"])
def test_main_screen_grid_tree_and_log(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=prepare())


def test_main_screen_readonly_hides_changing_actions(snap_compare) -> None:
    assert snap_compare(make_app(readonly=True), terminal_size=(140, 36),
                        run_before=prepare())


def test_task_detail_screen(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=prepare("enter"))


def test_inbox_screen(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 30), run_before=prepare("i"))


def test_submit_dialog(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 40),
                        run_before=prepare("1", "x", after=list("echo hi")))


def test_command_palette_shows_cli_equivalents(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 40),
                        run_before=prepare("ctrl+p", after=list("cancel")))


def test_help_screen(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=prepare("question_mark"))


@pytest.mark.parametrize("size", [(160, 48), (100, 30)], ids=["160x48", "100x30"])
def test_grid_filtered_and_sorted_by_cpu(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size,
                        run_before=prepare("1", "s", "s", "s", "slash", after=list("a100")))
