"""Make the README's pictures from a real running cockpit.

Starts a real relay (`dragoon relay serve`) and two real drones (`dragoon
drone run`) in a temp dir, submits a few tasks (one that keeps printing, one
that sends inbox messages, one that fails) and a 5x2 sweep that reports a
loss, then drives `CockpitApp` over the live relay with Textual's Pilot and
saves SVG screenshots of the main views (and the sweep's job view) into
screenshots/.

    .venv/bin/python screenshots/make_screenshots.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dragoon.cockpit.app.application import CockpitApp  # noqa: E402
from dragoon.cockpit.app.live import LiveSource  # noqa: E402
from dragoon.cockpit.app.messages import Link  # noqa: E402
from dragoon.cockpit.client import RelayClient  # noqa: E402
from textual.widgets import Input  # noqa: E402

from tests.drone.conftest import DroneProcess  # noqa: E402
from tests.support.relay import RelayProcess  # noqa: E402
from tests.support.sealing import trust_drone  # noqa: E402

OUT = REPO / "screenshots"
SIZE = (160, 46)
# The task's own colours (a yellow warning on stderr, a green "ok"), which the log pane draws.
TRAIN = ('for i in $(seq 1 400); do echo "epoch $((i / 40)) step $i loss=0.$((900 - i))"; '
         'if [ $((i % 25)) = 0 ]; then printf "\\033[33mwarning:\\033[0m slow batch %s\\n" $i >&2;'
         ' printf "checkpoint \\033[1;32mok\\033[0m\\n"; fi; sleep 0.05; done')
NOTIFY = ('echo "starting eval"; echo "eval: accuracy 0.913" >> "$DRAGOON_INBOX"; '
          'sleep 0.5; echo "checkpoint saved to out/ckpt.pt" >> "$DRAGOON_INBOX"; '
          'mkdir -p out && echo weights > out/ckpt.pt')


# A sweep whose trials report a loss that depends on their params, so its plot has a shape.
SWEEP_COMMAND = ("sleep 0.3; awk -v lr={lr} -v bs={bs} 'BEGIN {{ printf \"loss=%.3f\\n\", "
                 "(log(lr) / log(10) + 3) ^ 2 / 4 + 6.4 / bs + 0.2 }}' >> \"$DRAGOON_INBOX\"")


async def until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the cockpit did not reach the expected state")
        await asyncio.sleep(0.05)


async def drive(url: str, pilot_session: object, tasks: dict[str, str]) -> None:
    client = RelayClient(url, signer=pilot_session.signer,  # type: ignore[attr-defined]
                         token=pilot_session.token,  # type: ignore[attr-defined]
                         env=pilot_session.env)  # type: ignore[attr-defined]
    app = CockpitApp(LiveSource(client, pilot="alice"), ping_interval=1.0)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.link is Link.CONNECTED and len(app.state.drones) == 2)
        await until(lambda: app.state.unread >= 2)
        app.tree.select_task(tasks["train"])
        app.attach_log(tasks["train"])
        app.tree.focus()
        await until(lambda: len(app.log_view.buffer) > 60)
        await pilot.pause(0.5)

        def shot(name: str) -> None:
            for screen in app.screen_stack:
                for field in screen.query(Input):
                    field.cursor_blink = False
            app.save_screenshot(str(OUT / f"{name}.svg"))
            print(f"saved screenshots/{name}.svg")

        shot("main")
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.5)
        shot("main-80x24")
        await pilot.resize_terminal(*SIZE)
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(1.0)
        shot("task-detail")
        await pilot.press("escape", "i")
        await pilot.pause(0.5)
        shot("inbox")
        await pilot.press("escape", "1", "x")
        await pilot.pause(0.3)
        await pilot.press(*"python train.py --lr 3e-4")
        await pilot.pause(0.3)
        shot("submit")
        await pilot.press("escape", "2", "ctrl+p")
        await pilot.pause(0.5)
        shot("palette")
        await pilot.press("escape")
        await job_view(app, pilot, client, shot)


async def job_view(app: CockpitApp, pilot: object, client: RelayClient,
                   shot: Callable[[str], None]) -> None:
    """A sweep submitted as `dragoon sweep` would, its job view once every trial reported."""
    from dragoon.cockpit.app.screens.job import JobScreen
    from dragoon.cockpit.client import TrialSubmit
    from dragoon.shared.jobs import new_job_id
    from dragoon.shared.sweep import parse_sweep

    sweep = parse_sweep({"command": SWEEP_COMMAND, "labels": ["gpu"],
                         "grid": {"lr": ["1e-2", "3e-3", "1e-3", "3e-4", "1e-4"],
                                  "bs": ["32", "64"]}})
    job_id = new_job_id()
    trials = [TrialSubmit(trial=i, spec=sweep.spec_for(point, job_id, i), labels=["gpu"])
              for i, point in enumerate(sweep.points())]
    await client.submit_job(job_id, name="lr x bs sweep", kind="sweep", trials=trials)
    await until(lambda: app.state.jobs.get(job_id, {}).get("state") == "succeeded", 60)
    await until(lambda: job_id in app.tree._job_nodes)
    node = app.tree._job_nodes[job_id]
    app.tree.focus()
    app.tree.move_cursor(node, animate=False)
    await until(lambda: app.tree.cursor_node is node)
    await pilot.press("enter")  # type: ignore[attr-defined]
    await until(lambda: isinstance(app.screen, JobScreen) and app.screen.is_mounted)
    await pilot.press("p")  # type: ignore[attr-defined]  # plot against lr
    await pilot.pause(2.0)  # type: ignore[attr-defined]
    shot("job")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="dragoon-shots-") as tmp:
        root = Path(tmp)
        with RelayProcess(root / "relay", config={"sweep_interval": 0.5}) as relay:
            session = relay.pilot("alice")
            drones = []
            for name, labels in (("gpu-a100-1", ("gpu", "a100")), ("cpu-box-2", ("cpu",))):
                drone = DroneProcess(root / name)
                drone.join(relay.enroll(name, labels), slots=2, labels=labels)
                trust_drone(session.env, drone.data_dir)  # as `dragoon drones trust` would
                drone.configure(poll_wait=2.0)
                drone.start()
                drones.append(drone)
            try:
                tasks = {
                    "train": session.submit(TRAIN, drone="gpu-a100-1", name="lr sweep 3e-4")["id"],
                    "eval": session.submit(NOTIFY, drone="cpu-box-2", name="eval",
                                           artifacts=["out/*.pt"])["id"],
                    "fail": session.submit("echo loading; echo 'no such file: data.csv' >&2;"
                                           " exit 3", drone="cpu-box-2")["id"],
                }
                asyncio.run(drive(relay.url, session, tasks))
            finally:
                for drone in drones:
                    drone.stop()


if __name__ == "__main__":
    main()
