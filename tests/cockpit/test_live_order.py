"""The log pane shows stdout and stderr in the task's own order, through a real relay and drone.

The drone's wrapper records which stream each run of bytes came from (the
``order`` stream); the cockpit follows it beside stdout and stderr and fills
the pane in that order, not in the order the three happened to arrive. A lying
drone's order (claiming bytes that never come, or garbage) costs the order of
what it lies about, never the bytes, and never hangs the pane.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.cockpit import ordered
from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.live import LiveSource
from dragoon.cockpit.app.messages import Link
from dragoon.cockpit.app.widgets.logs.log_buffer import STDERR, STDOUT
from dragoon.cockpit.client import RelayClient
from dragoon.shared import e2e
from dragoon.shared.order import HEADER, OrderReader, encode_run

from tests.cockpit.waiting import until
from tests.drone.conftest import DroneProcess
from tests.drone.test_wrapper_order import LINES, PACED
from tests.support import records
from tests.support.relay import DroneClient, PilotSession, RelayProcess
from tests.support.sealing import trust_drone

pytestmark = pytest.mark.anyio
DRONE = "order-1"
CODE = {"stdout": STDOUT, "stderr": STDERR}


class World:
    def __init__(self, relay: RelayProcess, pilot: PilotSession, root: Path) -> None:
        self.relay = relay
        self.pilot = pilot

    def app(self) -> CockpitApp:
        client = RelayClient(self.relay.url, signer=self.pilot.signer, env=self.pilot.env,
                             token=self.pilot.token, timeout=10.0)
        return CockpitApp(LiveSource(client, pilot="alice"), ping_interval=0.5)

    def task(self, task_id: str) -> dict[str, Any]:
        answer = self.pilot.get(f"/v1/tasks/{task_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def stream(self, task_id: str, stream: str) -> bytes:
        return records.output(self.pilot, task_id, stream, whole=True)

    def sealed(self, task_id: str, stream: str, data: bytes) -> bytes:
        """``data`` sealed as the drone would (a lying drone still has the task key)."""
        return records.seal(records.task_key(self.pilot, task_id), task_id, stream, data)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("cockpit-order")
    with RelayProcess(root / "relay", config={"sweep_interval": 0.2}) as relay:
        pilot = relay.pilot("alice")
        drone = DroneProcess(root / "drone")
        drone.join(relay.enroll(DRONE, ["cpu"]), slots=2, labels=("cpu",))
        trust_drone(pilot.env, drone.data_dir)
        drone.configure(poll_wait=2.0)
        drone.start()
        try:
            yield World(relay, pilot, root)
        finally:
            drone.stop()


def pane(app: CockpitApp) -> list[tuple[int, str]]:
    buffer = app.log_view.buffer
    return [buffer.line(i) for i in range(len(buffer))]


async def follow(world: World, task_id: str, lines: int, *, final: bool = True,
                 timeout: float = 60) -> list[tuple[int, str]]:
    app = world.app()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.link is Link.CONNECTED and task_id in app.state.tasks
                    and not app._pending, timeout=30, what="the cockpit to see the task")
        # As a pilot does: the tree's cursor onto the task, which attaches its output. A bare
        # attach_log could be undone by a highlight the tree still had queued (the cursor it
        # put on the drone's newest task when the cockpit opened), under load.
        await until(pilot, lambda: app.tree.select_task(task_id), timeout=30,
                    what="the task in the tree")
        await until(pilot, lambda: app._log_task == task_id, timeout=30,
                    what="the task's output attached")
        try:
            await until(pilot, lambda: len(pane(app)) >= lines
                        and (not final or app.state.tasks[task_id].get("state") == "succeeded"),
                        timeout=timeout, what=f"{lines} lines in the pane")
        except AssertionError as exc:  # say what the pane and the task were at the deadline
            state = app.state.tasks.get(task_id, {}).get("state")
            raise AssertionError(f"{exc}: pane {pane(app)!r} of {app._log_task}, task {state}"
                                 ) from None
        await pilot.pause(0.3)  # nothing more, and nothing twice, comes after
        return pane(app)


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Holds long enough that no load on the test machine lets bytes through unordered: the
    bound on holds is tested in test_ordered.py and by the lying drone below."""
    monkeypatch.setattr(ordered, "HOLD_SECONDS", 120.0)
    monkeypatch.setattr(ordered, "NO_ORDER_SECONDS", 120.0)


@pytest.mark.usefixtures("patient")
async def test_the_pane_ends_in_exactly_program_order(world: World) -> None:
    # Attached while the task runs: the three streams come in as it writes them.
    task_id = world.pilot.submit(PACED, drone=DRONE)["id"]
    shown = await follow(world, task_id, 2 * LINES)
    assert shown == [(CODE[s], f"{w} {i}") for i in range(1, LINES + 1)
                     for s, w in (("stdout", "out"), ("stderr", "err"))]


@pytest.mark.usefixtures("patient")
async def test_the_pane_is_what_the_order_stream_records_for_a_tight_loop(
    world: World,
) -> None:
    """Unpaced, the wrapper may read several lines of a stream at once; whatever it read, the
    pane shows exactly that, on a live follow and on one attached after the end."""
    task_id = world.pilot.submit(
        f"for i in $(seq 1 {LINES}); do echo out $i; echo err $i >&2; done", drone=DRONE)["id"]
    live = await follow(world, task_id, 2 * LINES)
    runs = OrderReader().feed(world.stream(task_id, "order"))
    data = {s: world.stream(task_id, s) for s in CODE}
    at = dict.fromkeys(CODE, 0)
    recorded = []
    for run in runs:
        piece = data[run.stream][at[run.stream]:at[run.stream] + run.size]
        at[run.stream] += run.size
        recorded += [(CODE[run.stream], line) for line in piece.decode().splitlines()]
    assert live == recorded
    assert [t for c, t in live if c == STDOUT] == [f"out {i}" for i in range(1, LINES + 1)]
    assert await follow(world, task_id, 2 * LINES) == recorded  # attached afterwards


@pytest.fixture
def liar(world: World) -> Iterator[tuple[DroneClient, str]]:
    drone = world.relay.drone(f"liar-{len(world.relay._clients)}", pilot=world.pilot)
    task = world.pilot.submit("echo hi", drone=drone.name)["id"]
    drone.poll()
    drone.poll(running=[task], started=[{"id": task}])
    yield drone, task


async def test_an_order_claiming_bytes_that_do_not_exist_shows_what_exists(
    world: World, liar: tuple[DroneClient, str],
) -> None:
    drone, task = liar
    order = world.sealed(task, "order",
                         HEADER + encode_run("stdout", 10**12) + encode_run("stderr", 4))
    out, err = world.sealed(task, "stdout", b"tiny\n"), world.sealed(task, "stderr", b"err\n")
    assert drone.log(task, "order", 0, order).status_code == 200
    assert drone.log(task, "stdout", 0, out).status_code == 200
    assert drone.log(task, "stderr", 0, err).status_code == 200
    # The task runs on: the pane does not wait for ever on the stdout that never comes.
    assert await follow(world, task, 2, final=False, timeout=30) == [
        (STDOUT, "tiny"), (STDERR, "err")]
    finish = drone.finish(task, stdout_size=len(out), stderr_size=len(err),
                          order_size=len(order))
    assert finish.status_code == 200, finish.text
    assert await follow(world, task, 2) == [(STDOUT, "tiny"), (STDERR, "err")]


async def test_a_garbage_order_stream_costs_order_not_bytes(
    world: World, liar: tuple[DroneClient, str],
) -> None:
    drone, task = liar
    out = world.sealed(task, "stdout", b"one\ntwo\n")
    err = world.sealed(task, "stderr", b"three\n")
    order = world.sealed(task, "order", b"\x1b[2J" * 5000 + b"\n")
    assert drone.log(task, "stdout", 0, out).status_code == 200
    assert drone.log(task, "stderr", 0, err).status_code == 200
    assert drone.log(task, "order", 0, order).status_code == 200
    assert drone.finish(task, stdout_size=len(out), stderr_size=len(err),
                        order_size=len(order)).status_code == 200
    shown = await follow(world, task, 3)
    assert sorted(shown) == sorted([(STDOUT, "one"), (STDOUT, "two"), (STDERR, "three")])


def test_module_runs_against_real_processes(world: World) -> None:
    assert Path(world.relay.data_dir).is_dir()


async def test_a_stream_the_relay_altered_ends_the_pane_with_one_line_and_nothing_after(
    world: World,
) -> None:
    """The relay flips a byte in the second record of a task's stdout: the pane shows the
    first record's line, then dragoon's line saying the stream was altered, and nothing of
    the altered record or after it."""
    task_id = world.pilot.submit("echo one; sleep 0.6; echo two; sleep 0.6; echo three",
                                 drone=DRONE)["id"]
    stored = world.relay.data_dir / "logs" / task_id / "stdout"
    assert [line for _code, line in await follow(world, task_id, 3)] == ["one", "two", "three"]
    data = stored.read_bytes()
    first = e2e.parse_header(data[:e2e.HEADER_BYTES]).record_size
    assert first < len(data)
    edited = bytearray(data)
    edited[first + e2e.HEADER_BYTES + e2e.NONCE_BYTES] ^= 0x01  # the second record's body
    stored.write_bytes(bytes(edited))
    shown = await follow(world, task_id, 2)
    assert shown[0] == (STDOUT, "one")
    assert [line for _code, line in shown if "two" in line or "three" in line] == []
    notes = [line for code, line in shown if code == STDERR and "altered" in line]
    assert len(notes) == 1 and notes[0].startswith(f"[dragoon: task {task_id} stdout: record 1")
