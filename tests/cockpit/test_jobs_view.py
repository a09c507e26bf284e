"""Jobs in the cockpit, over fixed data: grouped in the tree with live progress, the job
view's table sorted by a parameter and by a metric, its plot, hostile text shown as data."""

from __future__ import annotations

from typing import Any

import pytest
from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.live import Snapshot
from dragoon.cockpit.app.screens.help import HelpScreen
from dragoon.cockpit.app.screens.job import JobScreen
from dragoon.cockpit.app.widgets.plot.plot_view import PlotView
from dragoon.cockpit.trials import counts, progress_text
from textual.widgets import DataTable, Static

from tests.cockpit.fixed_source import (
    NOW,
    FixedSource,
    demo_snapshot,
    fixed_clock,
    make_job,
    make_trial,
)
from tests.cockpit.waiting import showing, until

pytestmark = pytest.mark.anyio
JOB = "j-0000000001"
POINTS = [{"lr": "1e-3", "opt": "sgd"}, {"lr": "1e-2", "opt": "adam"},
          {"lr": "1e-4", "opt": "adam"}, {"lr": "1e-1", "opt": "sgd"}]
LOSSES = [0.5, 0.2, 0.9, 0.4]


def job_snapshot() -> tuple[Snapshot, list[dict[str, Any]]]:
    snap = demo_snapshot()
    trials = [make_trial(JOB, i, "succeeded", POINTS[i], drone=f"gpu-0{i % 3}")
              for i in range(3)] + [make_trial(JOB, 3, "queued", POINTS[3])]
    snap.tasks += trials
    snap.jobs = [make_job(JOB, trials=4)]
    snap.messages += [{"id": 100 + i, "task": trials[i]["id"], "drone": "gpu-00",
                       "text": f"loss={LOSSES[i]} acc=0.{i}", "created_at": NOW - 300 + i,
                       "acked": False} for i in range(3)]
    return snap, trials


async def loaded(pilot: Any) -> CockpitApp:
    app = pilot.app
    await until(pilot, lambda: app.snapshots and not app._pending, what="the snapshot")
    return app


def job_line(app: CockpitApp) -> str:
    return str(app.tree._job_nodes[JOB].label)


async def test_a_jobs_tasks_are_grouped_under_it_with_progress_that_follows_events() -> None:
    snap, trials = job_snapshot()
    source = FixedSource(snap)
    app = CockpitApp(source, clock=fixed_clock, ping_interval=3600)  # type: ignore[arg-type]
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        node = app.tree._job_nodes[JOB]
        assert node.parent is app.tree.root and app.tree.root.children[0] is node
        assert [c.data for c in node.children] == [t["id"] for t in trials]
        assert "lr sweep" in job_line(app) and "3✓ 0▶ 1… 0✗" in job_line(app)
        # no trial leaf sits under a drone group
        assert all(app.tree._leaves[t["id"]].parent is node for t in trials)
        source.events_queue.put_nowait(("task", {**trials[3], "state": "running",
                                                 "drone": "gpu-01", "started_at": NOW - 5}))
        await until(pilot, lambda: "3✓ 1▶ 0… 0✗" in job_line(app), what="running counted")
        # a retry (attempt 1) of trial 1 replaces its latest attempt in the counts
        source.events_queue.put_nowait(("task", {**trials[1], "id": "t-0000000r01",
                                                 "attempt": 1, "state": "failed",
                                                 "exit_code": 3}))
        await until(pilot, lambda: "2✓ 1▶ 0… 1✗" in job_line(app), what="the retry counted")
        assert [c.data for c in node.children][1:3] == [trials[1]["id"], "t-0000000r01"]
        source.events_queue.put_nowait(("job", {**snap.jobs[0], "name": "renamed"}))
        await until(pilot, lambda: "renamed" in job_line(app), what="the job event")


def test_progress_text_counts_latest_attempts() -> None:
    tasks = [{"trial": 0, "attempt": 0, "state": "lost"}, {"trial": 0, "attempt": 1,
                                                           "state": "succeeded"},
             {"trial": 1, "state": "dispatched"}, {"trial": 2, "state": "timed_out"},
             {"trial": 3, "state": "cancelled"}]
    assert progress_text(counts(tasks)) == "1✓ 1▶ 0… 1✗ 1⊘"


def column_values(table: DataTable[Any], column: str) -> list[str]:
    return [str(table.get_cell(row, column)) for row in table.rows]


async def open_job(pilot: Any, app: CockpitApp) -> JobScreen:
    node = app.tree._job_nodes[JOB]
    app.tree.focus()

    def on_job() -> bool:
        if app.tree.cursor_node is not node:
            app.tree.move_cursor(node, animate=False)  # once the tree has laid its lines out
        return app.tree.cursor_node is node and app.tree.has_focus

    await until(pilot, on_job, what="the cursor on the job")
    await pilot.press("enter")
    await until(pilot, lambda: showing(app, JobScreen), what="the job view")
    assert isinstance(app.screen, JobScreen)
    return app.screen


async def test_the_job_view_sorts_by_a_parameter_and_by_a_metric_and_plots() -> None:
    snap, trials = job_snapshot()
    source = FixedSource(snap)
    app = CockpitApp(source, clock=fixed_clock, ping_interval=3600)  # type: ignore[arg-type]
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        screen = await open_job(pilot, app)
        assert source.job_reads == [JOB]
        table = screen.query_one("#trials", DataTable)
        await until(pilot, lambda: table.row_count == 4, what="four trials")
        assert column_values(table, "trial") == ["0", "1", "2", "3"]
        assert column_values(table, "param:lr") == ["1e-3", "1e-2", "1e-4", "1e-1"]
        assert column_values(table, "metric:loss") == ["0.5", "0.2", "0.9", "-"]
        await pilot.press("s")  # trial → lr
        assert screen.sort_column == "param:lr"
        await until(pilot, lambda: column_values(table, "param:lr")
                    == ["1e-4", "1e-3", "1e-2", "1e-1"], what="sorted by lr as numbers")
        await pilot.press("S")
        await until(pilot, lambda: column_values(table, "param:lr")
                    == ["1e-1", "1e-2", "1e-3", "1e-4"], what="reversed")
        screen.sort_column, screen.reverse = "metric:loss", False
        screen.refresh_job()
        # by loss, the trial with none reported last
        assert column_values(table, "trial") == ["1", "0", "2", "3"]
        plot = screen.query_one(PlotView)
        assert screen.metric == "loss" and screen.x == "lr"
        assert sorted(plot.points) == [(1e-4, 0.9), (1e-3, 0.5), (1e-2, 0.2)]
        await pilot.press("p")  # lr → opt: categories
        await until(pilot, lambda: plot.categories == ["adam", "sgd"], what="categories")
        await pilot.press("p")  # → time
        await until(pilot, lambda: screen.x == "time" and len(plot.points) == 3,
                    what="loss over time")
        await pilot.press("m")
        assert screen.metric == "acc"
        await pilot.press("question_mark")  # the help lists the job view's keys first
        await until(pilot, lambda: showing(app, HelpScreen), what="the help")
        assert app.screen.jobs
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, what="back on the job view")
        # a message arriving live shows in its row
        source.events_queue.put_nowait(("message", {"id": 200, "task": trials[3]["id"],
                                                    "text": "loss=0.1", "drone": "gpu-01",
                                                    "created_at": NOW, "acked": False}))
        await until(pilot, lambda: "0.1" in column_values(table, "metric:loss"),
                    what="the live metric")
        # Enter on a trial follows its log on the main screen
        table.focus()
        table.move_cursor(row=0)
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is app.main, what="the main screen")
        assert app._log_task == screen.trials[0].task_id


async def test_hostile_text_in_a_trial_and_a_sealed_trial_show_as_data() -> None:
    snap, trials = job_snapshot()
    snap.jobs = [make_job(JOB, trials=4, name="[red]x[/] \x1b]0;pwned\x07")]
    snap.messages.append({"id": 150, "task": trials[0]["id"], "drone": "gpu-00",
                          "text": "[bold]boom[/] \x1b[2J loss=0.3 \u202eevil",
                          "created_at": NOW, "acked": False})
    sealed = make_trial(JOB, 3, "queued", {})
    sealed.update({"sealed": "no key", "spec": None})
    snap.tasks[-1] = sealed
    app = CockpitApp(FixedSource(snap), clock=fixed_clock, ping_interval=3600)  # type: ignore[arg-type]
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        assert "[red]x[/] ␛]0;pwned␇" in job_line(app)
        screen = await open_job(pilot, app)
        table = screen.query_one("#trials", DataTable)
        await until(pilot, lambda: table.row_count == 4, what="four trials")
        message = column_values(table, "message")[0]
        assert message.startswith("[bold]boom[/] ␛[2J loss=0.3 �evil")
        assert column_values(table, "param:lr")[3] == "(sealed)"
        title = str(screen.query_one("#job-title", Static).render())
        assert "\x1b" not in title and "pwned␇" in title


def test_the_state_holds_jobs_from_listings_and_events_once_each() -> None:
    from dragoon.cockpit.app.state import CockpitState, JobChanged, coalesce

    state = CockpitState()
    job = make_job(JOB)
    assert state.apply_snapshot(jobs=[job]) == [JobChanged(JOB, job)]
    assert state.apply_snapshot(jobs=[job]) == []  # a resync that changes nothing
    done = {**job, "state": "succeeded"}
    changes = state.apply_event("job", done) + state.apply_event("job", {**done, "name": "b"})
    assert [c.job["name"] for c in coalesce(changes)] == ["b"]
    assert state.jobs[JOB]["state"] == "succeeded"


def test_sorting_puts_blanks_last_and_text_as_text() -> None:
    from dragoon.cockpit.trials import rows, sort_rows

    tasks = [make_trial(JOB, i, "succeeded", {"opt": o}) for i, o in
             enumerate(["sgd", "adam", "10"])] + [make_trial(JOB, 3, "queued", {})]
    found = rows(tasks, {})
    assert [r.trial for r in sort_rows(found, "param:opt")] == [2, 1, 0, 3]
    assert [r.trial for r in sort_rows(found, "param:opt", reverse=True)] == [0, 1, 2, 3]
