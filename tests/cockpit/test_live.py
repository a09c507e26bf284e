"""The cockpit against a real relay subprocess and a real drone daemon, driven with Pilot.

One relay and one drone serve the whole module (starting them is the slow
part); the relay-restart test runs last because it takes the relay away.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.live import LiveSource
from dragoon.cockpit.app.messages import Link
from dragoon.cockpit.app.screens.detail import TaskDetailScreen
from dragoon.cockpit.app.screens.dialogs import (
    ConfirmScreen,
    JoinTokenScreen,
    OverwriteScreen,
    PromptScreen,
    SubmitScreen,
)
from dragoon.cockpit.app.screens.inbox import InboxScreen
from dragoon.cockpit.app.widgets.logs.log_buffer import STDERR, STDOUT
from dragoon.cockpit.client import RelayClient
from dragoon.shared.enrollment import JoinToken
from rich.console import Console
from textual.widgets import Input, Static

from tests.cockpit.waiting import showing, until
from tests.drone.conftest import DroneProcess
from tests.support.relay import PilotSession, RelayProcess, fresh_totp
from tests.support.sealing import trust_drone

pytestmark = pytest.mark.anyio
DRONE = "box-1"
SIZE = (140, 40)


class World:
    def __init__(self, relay: RelayProcess, pilot: PilotSession, drone: DroneProcess) -> None:
        self.relay = relay
        self.pilot = pilot
        self.drone = drone

    def app(self, *, token: str | None = None, download_dir: Path | None = None) -> CockpitApp:
        client = RelayClient(self.relay.url, signer=self.pilot.signer, env=self.pilot.env,
                             token=token or self.pilot.token, timeout=10.0)
        # The test pilot seals its tasks to its own encryption key: the cockpit is that pilot.
        client.keys._x25519 = self.pilot.x25519
        return CockpitApp(LiveSource(client, pilot="alice"), ping_interval=0.3,
                          download_dir=download_dir)

    def task(self, task_id: str) -> dict[str, Any]:
        answer = self.pilot.get(f"/v1/tasks/{task_id}")
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("cockpit-live")
    with RelayProcess(root / "relay", config={"sweep_interval": 0.2}) as relay:
        pilot = relay.pilot("alice")
        drone = DroneProcess(root / "drone")
        drone.join(relay.enroll(DRONE, ["cpu"]), slots=4, labels=("cpu",))
        trust_drone(pilot.env, drone.data_dir)
        drone.configure(poll_wait=2.0)
        drone.start()
        try:
            yield World(relay, pilot, drone)
        finally:
            drone.stop()


async def connected(pilot: Any, app: CockpitApp) -> None:
    await until(pilot, lambda: app.link is Link.CONNECTED and DRONE in app.state.drones
                and app.state.drones[DRONE].get("state") == "online" and not app._pending,
                timeout=20, what="the cockpit to connect and see the drone online")


def log_lines(app: CockpitApp) -> list[tuple[int, str]]:
    buffer = app.log_view.buffer
    return [buffer.line(i) for i in range(len(buffer))]


async def test_submit_from_the_dialog_shows_its_output(world: World) -> None:
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await connected(pilot, app)
        app.grid.focus()
        await pilot.press("x")
        await until(pilot, lambda: showing(app, SubmitScreen), what="the dialog")
        assert app.screen.query_one("#target", Input).value == DRONE  # the selected drone
        app.screen.query_one("#command", Input).value = (
            "echo hello-from-cockpit; echo oops-on-stderr >&2")
        known = set(app.state.tasks)  # the cockpit opened on an older task's output
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app._log_task is not None and app._log_task not in known,
                    what="the new task's log")
        task_id = app._log_task
        assert task_id is not None and task_id in app.state.tasks
        await until(pilot, lambda: (STDOUT, "hello-from-cockpit") in log_lines(app)
                    and (STDERR, "oops-on-stderr") in log_lines(app),
                    timeout=20, what="the output in the log pane")
        await until(pilot, lambda: app.state.tasks[task_id]["state"] == "succeeded",
                    timeout=20, what="the task to succeed")
        # The cockpit opened it (its own wrap of the task key); the relay holds no command.
        assert app.state.tasks[task_id]["spec"]["command"].startswith("echo hello-from-cockpit")
        assert "command" not in world.task(task_id)["spec"]


def summary_text(detail: TaskDetailScreen) -> str:
    """The detail's summary as the terminal shows it."""
    console = Console(width=120, file=io.StringIO(), record=True)
    console.print(detail.query_one("#detail-summary", Static).content)
    return console.export_text()


async def test_cancel_asks_then_the_task_ends_cancelled(world: World) -> None:
    task_id = world.pilot.submit("sleep 60", drone=DRONE, grace=1)["id"]
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await connected(pilot, app)
        await until(pilot, lambda: app.state.tasks.get(task_id, {}).get("state") == "running",
                    timeout=30, what="the task to run")
        await until(pilot, lambda: not app._pending, what="the flush")
        assert app.tree.select_task(task_id)
        app.tree.focus()
        await until(pilot, lambda: app.tree.selected_task_id == task_id, what="the cursor")
        await pilot.press("enter")  # cancel from the task's detail, which stays open and live
        await until(pilot, lambda: showing(app, TaskDetailScreen), what="the detail")
        detail = app.screen
        assert isinstance(detail, TaskDetailScreen)
        await pilot.press("c")
        await until(pilot, lambda: showing(app, ConfirmScreen), what="confirm")
        confirm = app.screen
        assert isinstance(confirm, ConfirmScreen)
        shown = dict(confirm.details)  # which run is stopped: its drone and command
        assert (shown["Drone"], shown["Command"], shown["State"]) == (DRONE, "sleep 60", "running")
        await pilot.press("y")
        await until(pilot, lambda: app.state.tasks[task_id]["state"] == "cancelled",
                    timeout=30, what="the cancelled state to reach the cockpit")
        assert world.task(task_id)["state"] == "cancelled"
        # the detail, never reopened, says so: state and the end of the run
        await until(pilot, lambda: "cancelled" in summary_text(detail)
                    and "Finished    -" not in summary_text(detail), what="the detail to update")
        assert app.screen is detail
        await pilot.press("escape")
        await until(pilot, lambda: (DRONE, "cancelled") in app.tree._state_nodes
                    and app.tree._leaves[task_id].parent
                    is app.tree._state_nodes[(DRONE, "cancelled")],
                    what="the task to move to the cancelled group of the tree")


async def test_a_message_arrives_and_marking_it_read_acks_on_the_relay(world: World) -> None:
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await connected(pilot, app)
        before = app.state.unread
        task_id = world.pilot.submit('echo "ready for review" >> "$DRAGOON_INBOX"',
                                     drone=DRONE)["id"]
        await until(pilot, lambda: any(m.get("task") == task_id
                                       for m in app.state.messages.values()),
                    timeout=20, what="the message")
        await until(pilot, lambda: app.bar.unread == before + 1, what="the unread count")
        message_id = next(i for i, m in app.state.messages.items() if m.get("task") == task_id)
        # Sealed by the drone under the task key, opened by the cockpit's client.
        assert app.state.messages[message_id].get("text") == "ready for review", \
            app.state.messages[message_id]
        await pilot.press("i")
        await until(pilot, lambda: showing(app, InboxScreen), what="the inbox")
        inbox = app.screen
        assert isinstance(inbox, InboxScreen)
        inbox.query_one("#inbox").move_cursor(  # type: ignore[attr-defined]
            row=inbox.query_one("#inbox").get_row_index(str(message_id)))  # type: ignore[attr-defined]
        await pilot.press("r")

        def acked_on_relay() -> bool:
            unread = world.pilot.get("/v1/messages", params={"unread": 1}).json()["messages"]
            return all(m["id"] != message_id for m in unread)

        await until(pilot, acked_on_relay, timeout=10, what="the ack on the relay")
        assert app.bar.unread == before
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is app.main, what="the jump to the task")
        assert app.tree.selected_task_id == task_id or app._log_task == task_id


async def test_drain_asks_then_the_drone_drains_and_an_artifact_downloads(
        world: World, tmp_path: Path) -> None:
    task_id = world.pilot.submit("mkdir -p out && echo weights > out/model.pt", drone=DRONE,
                                 artifacts=["out/*.pt"])["id"]
    app = world.app(download_dir=tmp_path)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            app.grid.focus()
            await pilot.press("D")
            await until(pilot, lambda: showing(app, ConfirmScreen), what="confirm")
            await pilot.press("y")
            await until(pilot, lambda: "draining" in str(app.grid.get_cell(DRONE, "state")),
                        what="the drone to show as draining")
            assert world.pilot.get("/v1/workers").json()["drones"][0]["draining"] is True
            await pilot.press("D", "y")  # and back
            await until(pilot, lambda: app.state.drones[DRONE].get("draining") is False,
                        what="the drone to undrain")
            await _download_artifact(world, app, pilot, task_id, tmp_path)
    finally:  # the other tests need a drone that takes work
        world.pilot.post(f"/v1/workers/{DRONE}/drain", json={"drain": False})


async def test_enroll_from_the_cockpit_mints_a_join_token_for_the_relay(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))  # the pending enrollment goes there
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await connected(pilot, app)
        await pilot.press("e")
        await until(pilot, lambda: showing(app, PromptScreen), what="name prompt")
        await pilot.press(*"cockpit-new", "enter")
        await until(pilot, lambda: showing(app, PromptScreen)
                    and "Labels" in app.screen.title_text, what="labels prompt")
        await pilot.press(*"gpu,lab", "enter")
        await until(pilot, lambda: showing(app, JoinTokenScreen), what="the token")
        screen = app.screen
        assert isinstance(screen, JoinTokenScreen)
        token = JoinToken.decode(screen.token)
        assert (token.drone, token.relay) == ("cockpit-new", world.relay.url)
        # Made on the pilot's side, as `dragoon enroll` makes it: the pilot's key to obey and
        # a binding key kept pending here (docs/security.md, "Trust roots on the ends").
        assert token.pilots == (world.pilot.signer.public_key.openssh(),)
        assert token.binding_key is not None
        assert "cockpit-new" in (tmp_path / "dragoon" / "pending-enrollments.json").read_text()
        await pilot.press("escape")
        await until(pilot, lambda: not showing(app, JoinTokenScreen), what="closed")


async def _enroll_taken_name(app: CockpitApp, pilot: Any) -> None:
    await pilot.press("e")
    await until(pilot, lambda: showing(app, PromptScreen), what="name prompt")
    await pilot.press(*DRONE, "enter")
    await until(pilot, lambda: showing(app, PromptScreen)
                and "Labels" in app.screen.title_text, what="labels prompt")
    await pilot.press("enter")
    await until(pilot, lambda: showing(app, ConfirmScreen), what="replace confirm")
    screen = app.screen
    assert isinstance(screen, ConfirmScreen)
    assert f"Drone {DRONE} exists (online)" in screen.question and "lost" in screen.question


def _may_replace(world: World) -> list[int]:
    import sqlite3

    with sqlite3.connect(world.relay.data_dir / "relay.db") as conn:
        return [r[0] for r in conn.execute(
            "SELECT may_replace FROM enrollments WHERE drone = ?", (DRONE,))]


async def test_enrolling_a_taken_name_from_the_cockpit_asks_before_replacing(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    before = _may_replace(world)
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await connected(pilot, app)
        await _enroll_taken_name(app, pilot)
        await pilot.press("n")  # declined: no token at all
        await until(pilot, lambda: not showing(app, ConfirmScreen), what="closed")
        assert not isinstance(app.screen, JoinTokenScreen)
        assert _may_replace(world) == before
        await _enroll_taken_name(app, pilot)
        await pilot.press("y")
        await until(pilot, lambda: showing(app, JoinTokenScreen), what="the token")
        screen = app.screen
        assert isinstance(screen, JoinTokenScreen)
        assert JoinToken.decode(screen.token).drone == DRONE
        # Minted as a replacing token; nobody uses it here, so the module's drone stays.
        assert sorted(_may_replace(world)) == sorted([*before, 1])
        await pilot.press("escape")


async def _download_artifact(world: World, app: CockpitApp, pilot: Any, task_id: str,
                             tmp_path: Path) -> None:
    def uploaded() -> bool:
        answer = world.pilot.get(f"/v1/tasks/{task_id}/artifact").json()
        return bool(answer.get("artifacts"))

    await until(pilot, uploaded, timeout=30, what="the artifact upload")
    await until(pilot, lambda: app.tree.select_task(task_id), what="the task in the tree")
    app.tree.focus()
    await until(pilot, lambda: app.tree.selected_task_id == task_id, what="the cursor")
    await pilot.press("enter")
    await until(pilot, lambda: showing(app, TaskDetailScreen)
                and app.screen.artifact_rows, what="the artifact list")
    await pilot.press("d")
    await until(pilot, lambda: (tmp_path / "model.pt").exists(), what="the download")
    assert (tmp_path / "model.pt").read_bytes() == b"weights\n"

    # again: the file exists, so the cockpit asks; another name keeps the first file
    (tmp_path / "model.pt").write_bytes(b"mine\n")
    await pilot.press("d")
    await until(pilot, lambda: showing(app, OverwriteScreen), what="overwrite ask")
    await pilot.press("a")
    await until(pilot, lambda: showing(app, PromptScreen), what="the name prompt")
    field = app.screen.query_one(Input)
    assert field.value == "model.pt"
    field.value = "model-2.pt"
    await pilot.press("enter")
    await until(pilot, lambda: (tmp_path / "model-2.pt").exists(), what="the renamed download")
    assert (tmp_path / "model-2.pt").read_bytes() == b"weights\n"
    assert (tmp_path / "model.pt").read_bytes() == b"mine\n"
    # and overwrite replaces it
    await until(pilot, lambda: showing(app, TaskDetailScreen), what="back")
    await pilot.press("d")
    await until(pilot, lambda: showing(app, OverwriteScreen), what="overwrite ask")
    await pilot.press("o")
    await until(pilot, lambda: (tmp_path / "model.pt").read_bytes() == b"weights\n",
                what="the overwritten file")


async def test_an_expired_session_asks_for_the_totp_code_in_the_app(world: World) -> None:
    app = world.app(token="not-a-valid-session-token")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: showing(app, PromptScreen), timeout=20,
                    what="the TOTP prompt")
        assert app.link is Link.LOGIN_NEEDED
        code = fresh_totp(world.pilot.totp_secret)  # type: ignore[attr-defined]
        app.screen.query_one(Input).value = code
        await pilot.press("enter")
        await connected(pilot, app)
        assert app.source.client.token != "not-a-valid-session-token"  # type: ignore[attr-defined]


async def test_relay_killed_and_restarted_the_cockpit_recovers(world: World) -> None:
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await connected(pilot, app)
        snapshots = app.snapshots
        world.relay.kill9()
        await until(pilot, lambda: app.link is Link.RECONNECTING, timeout=15,
                    what="the reconnecting state")
        assert "reconnecting" in str(app.bar.render())
        await pilot.press("2")  # the screen still answers keys while the relay is gone
        assert app.focused is app.tree
        world.relay.start()
        await until(pilot, lambda: app.link is Link.CONNECTED and app.snapshots > snapshots,
                    timeout=30, what="the resync after the restart")
        task_id = world.pilot.submit("echo after-restart", drone=DRONE)["id"]
        await until(pilot, lambda: task_id in app.state.tasks, timeout=30,
                    what="events flowing again after the restart")


def test_module_runs_against_real_processes(world: World) -> None:
    assert world.relay.process is not None and world.drone.process is not None
    assert Path(world.relay.data_dir).is_dir()


async def test_a_sweep_shows_as_a_job_with_its_params_and_metrics_live(world: World) -> None:
    from dragoon.cockpit.app.screens.job import JobScreen
    from dragoon.cockpit.client import TrialSubmit
    from dragoon.shared.jobs import new_job_id
    from dragoon.shared.sweep import parse_sweep
    from textual.widgets import DataTable

    sweep = parse_sweep({"command": 'echo "loss=0.{n}" >> "$DRAGOON_INBOX"',
                         "grid": {"n": ["3", "1"]}, "labels": ["cpu"]})
    job_id = new_job_id()
    trials = [TrialSubmit(trial=i, spec=sweep.spec_for(point, job_id, i), labels=["cpu"])
              for i, point in enumerate(sweep.points())]
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await connected(pilot, app)
        await app.source.client.submit_job(  # type: ignore[attr-defined]
            job_id, name="live sweep", kind="sweep", trials=trials)
        await until(pilot, lambda: app.state.jobs.get(job_id, {}).get("state") == "succeeded",
                    timeout=30, what="the job's event: succeeded")
        await until(pilot, lambda: job_id in app.tree._job_nodes, timeout=20,
                    what="the job's node")
        node = app.tree._job_nodes[job_id]
        await until(pilot, lambda: "2✓ 0▶ 0… 0✗" in str(node.label), timeout=20,
                    what="the job's progress from its tasks' events")
        app.tree.focus()

        def on_job() -> bool:
            if app.tree.cursor_node is not node:
                app.tree.move_cursor(node, animate=False)
            return app.tree.cursor_node is node and app.tree.has_focus
        await until(pilot, on_job, timeout=20, what="the cursor on the job")
        await pilot.press("enter")
        # Seen past a 10 s deadline on a loaded 2-core machine, once in several runs.
        await until(pilot, lambda: showing(app, JobScreen), timeout=30, what="the job view")
        table = app.screen.query_one("#trials", DataTable)

        def column(name: str) -> list[str]:
            return [str(table.get_cell(row, name)) for row in table.rows]
        await until(pilot, lambda: table.row_count == 2 and "-" not in column("metric:loss"),
                    timeout=20, what="both trials with their reported loss")
        assert column("param:n") == ["3", "1"]  # opened from each trial's sealed env
        assert column("metric:loss") == ["0.3", "0.1"]
