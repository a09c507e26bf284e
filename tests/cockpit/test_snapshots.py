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
from dragoon.cockpit.app.widgets.logs.log_view import LogView
from textual.app import App, ComposeResult
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


# -- the log pane alone, in the colours a task gave its output ------------------------------

def coloured_log() -> dict[str, bytes]:
    """What test runners, loggers and progress bars print, with what no pane may pass on."""
    out = [b"\x1b]0;training\x07\x1b[1mepoch 1\x1b[0m \x1b[2m(resumed)\x1b[22m",
           b"\x1b[32m PASSED\x1b[0m tests/test_model.py::test_forward",
           b"\x1b[31m FAILED\x1b[0m tests/test_model.py::test_backward - \x1b[1mAssertionError",
           b"  still bold, still the default colour\x1b[0m",
           b"\x1b[33mwarn\x1b[0m \x1b[3mitalic\x1b[23m \x1b[4munderlined\x1b[24m "
           b"\x1b[7mreverse\x1b[27m \x1b[9mstruck\x1b[29m",
           b"16: " + b"".join(b"\x1b[%dm%d" % (30 + i, i) for i in range(8))
           + b" " + b"".join(b"\x1b[%dm%d" % (90 + i, 8 + i) for i in range(8)) + b"\x1b[0m",
           b"256: " + b"".join(b"\x1b[48;5;%dm " % n for n in range(16, 232, 6)) + b"\x1b[0m",
           b"rgb: " + b"".join(b"\x1b[38;2;%d;%d;255m#" % (n * 8, 255 - n * 8) for n in range(32))
           + b"\x1b[0m",
           b"see \x1b]8;;https://example.invalid/\x1b\\the docs\x1b]8;;\x1b\\"
           b" (a link, drawn as text)",
           b"\x1b[2J\x1b[Hcursor moves and erases are dropped\x1b[5A\x1b[K",
           b"\x1b[36mstep 0100\x1b[0m loss=0.4213 " + b"=" * 150 + b"> the end of a long line",
           b"\x1b[1;35mrun continues in magenta",
           b"across lines until it is reset\x1b[0m",
           b" 10%\r 55%\r\x1b[32m100%\x1b[0m done"]
    err = b"\x1b[33mUserWarning\x1b[0m: stderr keeps its colour where the task sets none\n"
    return {"stdout": b"\n".join(out) + b"\n", "stderr": err}


class ColouredLogApp(App[None]):
    CSS = "LogView { height: 1fr; }"

    def compose(self) -> ComposeResult:
        yield LogView(id="log")


def show_log(*keys: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run_before(pilot: Pilot[None]) -> None:
        view = pilot.app.query_one(LogView)
        for stream, data in coloured_log().items():
            view.append(stream, data)
        view._flush(force=True)
        view.focus()
        await pilot.pause()
        await pilot.press(*keys)
        await pilot.pause()
        view._flush(force=True)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_log_pane_with_colours(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(ColouredLogApp(), terminal_size=size, run_before=show_log())


def test_log_pane_with_colours_wrapped(snap_compare) -> None:
    assert snap_compare(ColouredLogApp(), terminal_size=(80, 24), run_before=show_log("w"))
