"""The cockpit's views, driven with Pilot over fixed data: they open, and keys do what they say.

(The snapshot plugin renders but does not fail on an app exception; these tests do.)
"""

from __future__ import annotations

from typing import Any

import click
import pytest
from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.screens.detail import TaskDetailScreen
from dragoon.cockpit.app.screens.dialogs import (
    ConfirmScreen,
    PromptScreen,
    SubmitScreen,
    build_submit,
)
from dragoon.cockpit.app.screens.help import HelpScreen
from dragoon.cockpit.app.screens.inbox import InboxScreen
from dragoon.cockpit.app.state import CockpitState
from dragoon.cockpit.app.widgets.tasks.task_tree import TaskTree
from dragoon.cockpit.cli._common import Duration, EnvPair
from dragoon.shared.spec import MAX_COMMAND_BYTES
from textual.app import App, ComposeResult
from textual.command import CommandPalette
from textual.widgets import Input, Static

from tests.cockpit.fixed_source import FixedSource, fixed_clock
from tests.cockpit.waiting import showing, until

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


def cli_reason(kind: click.ParamType, flag: str, text: str) -> str:
    """What `dragoon submit` says about a flag value: click names the flag, shared the rest."""
    param = click.Option([flag])
    with pytest.raises(click.BadParameter) as caught:
        kind.convert(text, param, None)
    return f"{param.name}: {caught.value.message}"


def test_submit_form_accepts_the_timeouts_the_cli_accepts() -> None:
    for text, seconds in (("1h30m", 5400), ("90", 90), ("2d", 172800), ("1h 30m", 5400)):
        form = build_submit(target="gpu-1", command="true", timeout=text, artifacts="", env="",
                            name="")
        assert form.errors == [] and form.spec["timeout"] == seconds, text
        assert Duration("timeout").convert(text, None, None) == seconds


def test_submit_form_refuses_a_zero_timeout_with_the_clis_reason() -> None:
    form = build_submit(target="gpu-1", command="true", timeout="0", artifacts="", env="",
                        name="")
    assert form.field_errors == {"timeout": "timeout: must be more than zero"}
    assert cli_reason(Duration("timeout"), "--timeout", "0") == form.field_errors["timeout"]


def test_submit_form_refuses_an_env_name_the_shell_refuses_with_the_clis_reason() -> None:
    form = build_submit(target="gpu-1", command="true", timeout="", artifacts="", env="1X=2",
                        name="")
    assert form.field_errors == {"env": "env: '1X' is not a variable name (1-256 of A-Z a-z "
                                        "0-9 _, not starting with a digit)"}
    assert cli_reason(EnvPair(), "--env", "1X=2") == form.field_errors["env"]


def test_submit_form_holds_each_field_to_the_relays_rule() -> None:
    form = build_submit(target="gpu 1", command="x" * (MAX_COMMAND_BYTES + 1), timeout="2h",
                        artifacts="out/*, ../up", env="", name="two\nlines")
    assert set(form.field_errors) == {"target", "command", "artifacts", "name"}
    assert form.field_errors["target"].startswith("drone: 'gpu 1' is not a name")
    assert form.field_errors["artifacts"] == ("artifacts: '../up' holds '..'; patterns stay "
                                              "inside the work dir")
    labels = build_submit(target="labels:gpu,,a100", command="true", timeout="", artifacts="",
                          env="", name="")
    assert labels.field_errors == {"target": "labels: 'gpu,,a100' has an empty label between "
                                             "commas"}


class RecordingSource(FixedSource):
    """Takes the orders the fixed source refuses, and remembers them."""

    def __init__(self) -> None:
        super().__init__()
        self.orders: list[tuple[str, Any]] = []

    async def submit(self, spec: dict[str, Any], *, drone: str | None,
                     labels: list[str] | None) -> dict[str, Any]:
        self.orders.append(("submit", (spec, drone, labels)))
        return {**self.fixed.tasks[0], "id": "t-submitted0"}

    async def enroll(self, drone: str, labels: list[str]) -> str:
        self.orders.append(("enroll", (drone, labels)))
        return "dragoon-join-v1.token"


def error_line(screen: Any, widget_id: str) -> tuple[bool, str]:
    line = screen.query_one(f"#{widget_id}", Static)
    return bool(line.display), str(line.render())


async def test_submit_dialog_shows_the_reason_under_the_field_and_stays_open() -> None:
    source = RecordingSource()
    app = CockpitApp(source, clock=fixed_clock, ping_interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("x")
        await until(pilot, lambda: showing(app, SubmitScreen), what="the dialog")
        dialog = app.screen
        assert error_line(dialog, "timeout-error") == (False, "")
        for widget_id, value in (("target", "gpu-01"), ("command", "true"),
                                 ("timeout", "0"), ("env", "1X=2")):
            dialog.query_one(f"#{widget_id}", Input).value = value
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is dialog, "the dialog closed on bad input"
        assert error_line(dialog, "timeout-error") == (True, "timeout: must be more than zero")
        assert error_line(dialog, "env-error")[0] is True
        env_error = dialog.query_one("#env-error", Static)
        reason = error_line(dialog, "env-error")[1]
        assert env_error.region.width < len(reason) <= env_error.region.area  # wrapped, not cut
        assert error_line(dialog, "command-error") == (False, "")
        dialog.query_one("#timeout", Input).value = "1h30m"
        dialog.query_one("#env", Input).value = "X1=2"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: source.orders, what="the submit")
        assert source.orders == [("submit", ({"command": "true", "timeout": 5400,
                                              "env": {"X1": "2"}}, "gpu-01", None))]
        assert app.screen is not dialog


async def test_enroll_prompts_refuse_a_bad_name_and_take_spaced_labels() -> None:
    source = RecordingSource()
    app = CockpitApp(source, clock=fixed_clock, ping_interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("e")
        await until(pilot, lambda: showing(app, PromptScreen), what="the name prompt")
        prompt = app.screen
        await pilot.press(*"gpu 9", "enter")
        await pilot.pause()
        assert app.screen is prompt
        shown, text = error_line(prompt, "prompt-error")
        assert shown and text.startswith("drone: 'gpu 9' is not a name (1-63 of")
        prompt.query_one(Input).value = "gpu-9"
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is not prompt, what="the labels prompt")
        labels = app.screen
        await pilot.press(*"gpu a100", "enter")
        await pilot.pause()
        assert app.screen is labels and error_line(labels, "prompt-error")[1].startswith(
            "labels: 'gpu a100' is not a label")
        labels.query_one(Input).value = "gpu, a100"
        await pilot.press("enter")
        await until(pilot, lambda: source.orders, what="the enroll")
        assert source.orders == [("enroll", ("gpu-9", ["gpu", "a100"]))]


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
