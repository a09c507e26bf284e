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
from dragoon.cockpit.app.widgets.logs.log_view import LogView
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Input

from tests.cockpit.fixed_source import FixedSource, demo_log, fixed_clock
from tests.cockpit.waiting import showing, until

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
        await until(pilot, lambda: showing(pilot.app, TaskDetailScreen)
                    and pilot.app.screen.artifact_rows, what="the artifacts")
        await pilot.press("d")
        await until(pilot, lambda: showing(pilot.app, OverwriteScreen),
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


def test_job_view_at_120x40(snap_compare) -> None:
    """A sweep's job view: params, metrics, the plot of loss against lr."""
    from dragoon.cockpit.app.screens.job import JobScreen

    from tests.cockpit.test_jobs_view import JOB, job_snapshot

    app = CockpitApp(FixedSource(job_snapshot()[0]), clock=fixed_clock, ping_interval=3600)

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        app.open_job(JOB)
        await until(pilot, lambda: showing(app, JobScreen) and app.screen.refreshes,
                    what="the job view")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)
