"""The cockpit's views, driven with Pilot over fixed data: they open, and keys do what they say.

(The snapshot plugin renders but does not fail on an app exception; these tests do.)
"""

from __future__ import annotations

from typing import Any

import pytest
from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.screens.detail import TaskDetailScreen
from dragoon.cockpit.app.screens.dialogs import ConfirmScreen, SubmitScreen, build_submit
from dragoon.cockpit.app.screens.help import HelpScreen
from dragoon.cockpit.app.screens.inbox import InboxScreen
from dragoon.cockpit.app.state import CockpitState
from dragoon.cockpit.app.widgets.tasks.task_tree import TaskTree
from textual.app import App, ComposeResult
from textual.command import CommandPalette

from tests.cockpit.fixed_source import FixedSource, fixed_clock
from tests.cockpit.waiting import until

pytestmark = pytest.mark.anyio


def make_app(**kw: object) -> CockpitApp:
    return CockpitApp(FixedSource(), clock=fixed_clock, ping_interval=3600, **kw)  # type: ignore[arg-type]


async def loaded(pilot) -> CockpitApp:  # type: ignore[no-untyped-def]
    app = pilot.app
    for _ in range(100):
        await pilot.pause()
        if app.snapshots and not app._pending:
            return app
    raise AssertionError("the fixed snapshot never reached the widgets")


async def test_every_view_opens_and_closes() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        assert app.grid.row_count == 6
        app.tree.select_task("t-0000000000")
        app.tree.focus()
        await pilot.pause()
        for key, screen_type in (("enter", TaskDetailScreen), ("i", InboxScreen),
                                 ("question_mark", HelpScreen), ("x", SubmitScreen),
                                 ("c", ConfirmScreen), ("ctrl+p", CommandPalette)):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, screen_type), key
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is app.main, key


async def test_readonly_refuses_changing_actions() -> None:
    app = make_app(readonly=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        for key in ("x", "c", "D"):
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is app.main, key
        shown = {key for key, active in app.screen.active_bindings.items()
                 if active.enabled and active.binding.show}
        assert "i" in shown
        assert not {"x", "c", "D"} & shown


async def test_grid_filter_and_sort_keep_the_cursor_on_its_drone() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        grid = app.grid
        grid.focus()
        grid.move_cursor(row=grid.get_row_index("gpu-04"))
        # sort by cpu: gpu-04 (92%) is the busiest, gpu-03 (offline, no metrics) goes last
        await pilot.press("s", "s", "s")
        await pilot.pause()
        assert grid.sort_column == "cpu"
        assert grid.selected_name == "gpu-04"
        assert grid.get_row_index("gpu-04") == grid.row_count - 2
        assert grid.get_row_index("gpu-03") == grid.row_count - 1
        await pilot.press("slash", *"a100")
        await pilot.pause()
        assert grid.row_count == 3
        assert grid.selected_name == "gpu-04"
        await pilot.press("escape")
        await pilot.pause()
        assert grid.row_count == 6


async def test_log_follow_stops_on_scroll_up_and_resumes_on_end() -> None:
    lines = b"".join(b"line %d\n" % i for i in range(500))
    app = CockpitApp(FixedSource(logs={"stdout": lines}), clock=fixed_clock, ping_interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        app.attach_log("t-0000000000")
        view = app.log_view
        for _ in range(50):
            await pilot.pause()
            if view.line_count == 500:
                break
        assert view.line_count == 500
        assert view.follow and view.scroll_y == view.max_scroll_y
        view.focus()
        await pilot.press("pageup")
        await pilot.pause()
        assert not view.follow
        view.append("stdout", b"one more\n")
        view._flush()
        await pilot.pause()
        assert view.scroll_y < view.max_scroll_y  # did not jump to the bottom
        await pilot.press("end")
        await pilot.pause()
        assert view.follow and view.scroll_y == view.max_scroll_y
        await pilot.press("slash", *"line 42", "enter")
        await pilot.pause()
        assert view.match_line == 42 and not view.follow


async def test_marking_read_acknowledges_on_the_source() -> None:
    source = FixedSource()
    app = CockpitApp(source, clock=fixed_clock, ping_interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        assert app.bar.unread == 2
        await pilot.press("i", "r")
        await until(pilot, lambda: source.acked, what="the acknowledgement")
        assert source.acked == [2]
        await until(pilot, lambda: app.bar.unread == 1, what="the unread count")


def test_submit_form_builds_a_spec_or_says_what_is_wrong() -> None:
    ok = build_submit(target="labels:gpu, a100", command="python t.py", timeout="3h",
                      artifacts="out/*.pt, logs/*", env="A=1 B='two words'", name="sweep")
    assert ok.errors == []
    assert ok.labels == ["gpu", "a100"] and ok.drone is None
    assert ok.spec == {"command": "python t.py", "timeout": 10800,
                       "artifacts": ["out/*.pt", "logs/*"], "env": {"A": "1", "B": "two words"},
                       "name": "sweep"}
    bad = build_submit(target="", command=" ", timeout="soon", artifacts="", env="X",
                       name="")
    assert len(bad.errors) == 4
    assert build_submit(target="gpu-1", command="true", timeout="", artifacts="", env="",
                        name="").spec == {"command": "true", "timeout": None}


async def test_metrics_update_patches_cells_and_resorts_only_when_the_sort_key_moves() -> None:
    source = FixedSource()
    app = CockpitApp(source, clock=fixed_clock, ping_interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        grid = app.grid
        grid.focus()
        grid.move_cursor(row=grid.get_row_index("gpu-02"))
        sorts = grid.sorts
        drone = dict(app.state.drones["gpu-02"])
        drone["metrics"] = {**drone["metrics"], "cpu_percent": 99.0}
        source.events_queue.put_nowait(("drone", drone))
        await until(pilot, lambda: "99%" in str(grid.get_cell("gpu-02", "cpu")),
                    what="the cpu cell")
        assert grid.sorts == sorts  # sorted by name: a metric never moves rows
        grid.set_sort("cpu")
        sorts = grid.sorts
        assert grid.get_row_index("gpu-02") == 4  # busiest of the five with metrics
        drone["metrics"] = {**drone["metrics"], "cpu_percent": 1.0}
        source.events_queue.put_nowait(("drone", drone))
        # gpu-00 reports 0 %, so 1 % sorts second
        await until(pilot, lambda: grid.get_row_index("gpu-02") == 1, what="the re-sort")
        assert grid.sorts == sorts + 1
        assert grid.selected_name == "gpu-02"  # the cursor followed its drone


async def test_a_metric_change_that_draws_the_same_cell_touches_nothing() -> None:
    source = FixedSource()
    app = CockpitApp(source, clock=fixed_clock, ping_interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        grid = app.grid
        updates = grid.cell_updates
        drone = dict(app.state.drones["gpu-02"])
        cpu = drone["metrics"]["cpu_percent"]
        drone["metrics"] = {**drone["metrics"], "cpu_percent": cpu + 0.2}  # same at 0 decimals
        source.events_queue.put_nowait(("drone", drone))
        await until(pilot, lambda: app.state.drones["gpu-02"]["metrics"]["cpu_percent"]
                    == cpu + 0.2 and not app._pending, what="the event")
        assert grid.cell_updates == updates
        drone["metrics"] = {**drone["metrics"], "cpu_percent": cpu + 10}
        source.events_queue.put_nowait(("drone", drone))
        await until(pilot, lambda: grid.cell_updates == updates + 1, what="one cell update")


class TreeOnly(App[None]):
    def compose(self) -> ComposeResult:
        yield TaskTree(clock=fixed_clock, id="tree")


def _task(task_id: str, **kw: Any) -> dict[str, Any]:
    return {"id": task_id, "state": "queued", "drone": None, "created_at": 1.0,
            "spec": {"command": "true"}} | kw


async def test_task_tree_groups_by_drone_then_state_in_lifecycle_order_newest_first() -> None:
    # arrival order is the hard case: a later state and an older task come first
    tasks = [_task("t-1", drone="b", state="succeeded"), _task("t-2", drone="b", state="running"),
             _task("t-3"), _task("t-4", drone="a", state="running", created_at=5.0),
             _task("t-5", drone="a", state="running", created_at=9.0)]
    app = TreeOnly()
    async with app.run_test(size=(80, 30)) as pilot:
        tree = app.query_one(TaskTree)
        tree.apply(CockpitState().apply_snapshot(tasks=tasks))
        await pilot.pause()
        drones = tree.root.children
        assert [str(node.label) for node in drones] == ["(queued)", "a", "b"]
        assert [str(node.label).split()[1] for node in drones[2].children] == [
            "running", "succeeded"]
        assert [leaf.data for leaf in drones[1].children[0].children] == ["t-5", "t-4"]
        running, succeeded = drones[2].children
        assert running.is_expanded and not succeeded.is_expanded  # finished groups fold
