"""Untrusted text is data: what a lying drone wrote reaches the pilot's terminal inert.

A real relay, and a drone that lies (``DroneClient``, speaking the worker
routes from shared/): its hostname, version, metrics, messages, artifact paths
and task errors carry rich markup (``[/]``, ``[bold red]``), a window-title
escape (``ESC ] 0 ; pwned BEL``), a clear-screen (``ESC [ 2 J``), an 8-bit CSI
(U+009B) and a bidi override (U+202E). ``dragoon drones``, ``tasks``, ``task``,
``inbox``, ``artifacts`` and an error line run on a real pseudo-terminal (so rich
draws its coloured tables) must exit 0, write no escape of their own but
rich's SGR colours, no BEL, C1 or bidi control, and show the placeholders
instead; ``--json`` gives back the exact hostile strings. What the relay's door
refuses (control characters in task names, hostnames, versions; a label
outside the label rule) is refused with the shared rule's reason.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import re
import select
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from dragoon.shared.enrollment import JoinToken
from dragoon.shared.sealed_files import FileStream, seal_meta
from dragoon.shared.signers import KeyFileSigner

from tests.cli.conftest import Pilot, make_pilot
from tests.support import records
from tests.support.relay import DroneClient, PilotSession, RelayProcess, new_signer, wait_until

TITLE = "\x1b]0;pwned\x07"  # sets the terminal window's title
CLEAR = "\x1b[2J"  # clears the screen
CSI8 = "\x9b31m"  # an 8-bit CSI: red on terminals that take C1 controls
BIDI = "\u202egnp.exe\u202c"  # reads as "exe.png"
MARKUP = "[/] [bold red]boom"
HOSTILE = f"{MARKUP} {TITLE}{CLEAR}{CSI8}{BIDI}"
# The same text as the pilot sees it: control pictures for C0, U+FFFD for C1 and bidi.
SHOWN = "[/] [bold red]boom ␛]0;pwned␇␛[2J\ufffd31m\ufffdgnp.exe\ufffd"
HOSTILE_PATH = f"out/{TITLE}[/]{BIDI}.pt"
SHOWN_PATH = "out/␛]0;pwned␇[/]\ufffdgnp.exe\ufffd.pt"
TASK_NAME = "x[/] [bold red]boom"  # no control character: a valid name, shown as written
METRICS: dict[str, Any] = {"cpu_percent": CLEAR, "load": [TITLE], "gpus": "[/]",
                           "mem_total": "[bold]", TITLE: BIDI}
LIAR = "liar-1"
FORGED = "first\nfake 2m ago  liar-1  t-0  second"  # one message posing as two lines
SGR = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class World:
    relay: RelayProcess
    pilot: Pilot  # the CLI pilot: runs `dragoon …`
    api: PilotSession  # the same pilot straight on the API (bypasses the CLI's checks)
    liar: DroneClient
    task: str  # dispatched to the liar, with its hostile message, artifact and error


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile-cli")
    with RelayProcess(root / "relay", config={"sweep_interval": 0.2}) as relay:
        pilot = make_pilot(relay, root, "alice")
        pilot.login()
        api = PilotSession(relay.url, KeyFileSigner.from_file(pilot.key))
        api.env = pilot.env  # the CLI pilot's machine: its X25519 key opens what api seals
        api.login(pilot.totp_secret)
        liar = relay.drone(LIAR, ["gpu"], slots=4)
        pilot.trust(liar)
        answer = liar.poll(hostname="box[/]", version="[bold red]9", metrics=METRICS)
        assert answer.status_code == 200, answer.text
        task = api.submit("echo hi", drone=LIAR, name=TASK_NAME)["id"]
        handed = liar.poll(metrics=METRICS).json()["tasks"]
        assert [t["id"] for t in handed] == [task]
        # Sealed as a drone does: the liar runs the task, so it has the task key.
        output = records.seal(records.task_key(api, task), task, "stdout",
                              b"plain \x1b[31mred\x1b[0m " + TITLE.encode() + b"\n")
        assert liar.log(task, "stdout", 0, output).status_code == 200
        no_stderr = records.seal(records.task_key(api, task), task, "stderr", b"")
        assert liar.log(task, "stderr", 0, no_stderr).status_code == 200
        assert liar.message(task, 0, HOSTILE).status_code == 200
        assert liar.message(task, 1, FORGED).status_code == 200
        # The hostile path comes in the artifact's sealed metadata, as a drone sends it.
        stream = FileStream(api.task_key(task), task, "artifact", "0")
        meta = seal_meta(stream, {"path": HOSTILE_PATH, "size": 7,
                                  "sha256": hashlib.sha256(b"weights").hexdigest()})
        sealed = b"".join(stream.writer().seal_all(b"weights", final=True))
        assert liar.blob(sealed, task=task, path="0", meta=meta).status_code == 200
        finished = liar.finish(task, "failed", exit_code=3, error=HOSTILE,
                               stdout_size=len(output), stderr_size=len(no_stderr))
        assert finished.status_code == 200, finished.text
        try:
            yield World(relay, pilot, api, liar, task)
        finally:
            api.close()


def on_terminal(pilot: Pilot, *args: str, timeout: float = 60) -> tuple[int, str]:
    """``dragoon ARGS`` with stdout and stderr on a real pseudo-terminal, 200 columns wide.

    Returns the exit code and everything the terminal received (strictly UTF-8).
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {**pilot.env, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "50"}
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):
        env.pop(name, None)
    process = subprocess.Popen(pilot.argv(*args), stdin=slave, stdout=slave, stderr=slave,
                               env=env, cwd=pilot.home)
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            received += data
        code = process.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, received.decode("utf-8")


def assert_inert(seen: str) -> None:
    """Nothing but rich's own SGR colours may steer the terminal."""
    rest = SGR.sub("", seen)
    for char, what in (("\x1b", "ESC"), ("\x07", "BEL"), ("\x9b", "8-bit CSI"),
                       ("\u202e", "bidi override"), ("\u202c", "bidi pop")):
        assert char not in rest, f"{what} reached the terminal: {seen!r}"


def test_drones_on_a_terminal_show_a_lying_drones_metrics_as_nothing(world: World) -> None:
    code, seen = on_terminal(world.pilot, "drones")
    assert code == 0, seen
    assert_inert(seen)
    row = next(line for line in SGR.sub("", seen).splitlines() if LIAR in line)
    assert "gpu" in row and " - " in row  # the load the liar sent is no number


def test_drones_json_gives_back_exactly_what_the_drone_said(world: World) -> None:
    drone = next(d for d in world.pilot.json("drones") if d["name"] == LIAR)
    assert (drone["hostname"], drone["version"]) == ("box[/]", "[bold red]9")
    assert drone["metrics"] == METRICS


def test_tasks_and_task_on_a_terminal_show_names_and_errors_as_text(world: World) -> None:
    code, seen = on_terminal(world.pilot, "tasks")
    assert code == 0, seen
    assert_inert(seen)
    assert TASK_NAME in SGR.sub("", seen)
    code, seen = on_terminal(world.pilot, "task", world.task)
    assert code == 0, seen
    assert_inert(seen)
    plain = SGR.sub("", seen)
    assert TASK_NAME in plain and SHOWN in plain


def test_task_json_is_byte_exact(world: World) -> None:
    found = world.pilot.json("task", world.task)
    assert (found["name"], found["error"]) == (TASK_NAME, HOSTILE)


def test_inbox_on_a_terminal_shows_a_hostile_message_inert(world: World) -> None:
    code, seen = on_terminal(world.pilot, "inbox", "--no-ack")
    assert code == 0, seen
    assert_inert(seen)
    line = next(line for line in SGR.sub("", seen).splitlines() if world.task in line)
    assert line.rstrip("\r").endswith(f"{LIAR}  {world.task}  {SHOWN}")
    listed = world.pilot.json("inbox", "--no-ack")
    assert [m["text"] for m in listed if m["task"] == world.task] == [HOSTILE, FORGED]


def test_piped_inbox_keeps_one_message_on_one_line(world: World) -> None:
    out = world.pilot.ok("inbox", "--no-ack")
    lines = [line for line in out.splitlines() if world.task in line]
    assert len(lines) == 2
    assert lines[0].endswith(SHOWN)
    assert lines[1].endswith("first␊fake 2m ago  liar-1  t-0  second")


def test_artifacts_on_a_terminal_show_a_hostile_path_inert(world: World) -> None:
    code, seen = on_terminal(world.pilot, "artifacts", world.task)
    assert code == 0, seen
    assert_inert(seen)
    assert SHOWN_PATH in SGR.sub("", seen)
    assert [a["path"] for a in world.pilot.json("artifacts", world.task)] == [HOSTILE_PATH]


def test_an_error_line_quoting_what_was_typed_is_inert(world: World) -> None:
    code, seen = on_terminal(world.pilot, "task", f"t-{TITLE}")
    assert code == 2, seen  # no task id can hold it: a usage error, before any request
    assert_inert(seen)
    lines = [line for line in seen.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dragoon: ") and "pwned" in lines[0]


def test_a_task_error_that_run_reports_is_inert(world: World) -> None:
    """``dragoon run``: the drone's reason for a task without an exit status, one inert line."""
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(
        zip(("code", "seen"), on_terminal(world.pilot, "run", LIAR, "--", "true"),
            strict=True)))
    runner.start()
    handed = wait_until(lambda: world.liar.poll().json().get("tasks"), timeout=30,
                        message="the run's task handed to the liar")
    answer = world.liar.finish(handed[0]["id"], "failed", exit_code=None, error=HOSTILE)
    assert answer.status_code == 200, answer.text
    runner.join(60)
    assert result["code"] == 255, result
    assert_inert(result["seen"])
    assert f"ended failed: {SHOWN}" in result["seen"]


def test_logs_are_the_tasks_own_bytes_exactly_like_ssh(world: World) -> None:
    """Task output is the pilot's own program talking: ``dragoon logs`` passes it on as is."""
    done = subprocess.run(world.pilot.argv("logs", world.task), capture_output=True,
                          env=world.pilot.env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"plain \x1b[31mred\x1b[0m " + TITLE.encode() + b"\n"


# -- the relay's door --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "reason"), [
    (f"sweep {TITLE}", "name: must be one line without control characters"),
    ("sweep \x9b2J", "name: must be one line without control characters"),
    ("sweep\u2028two", "name: must be one line without control characters"),
    (f"sweep {BIDI}", "name: must not hold bidi override or isolate characters "
                      "(U+202A..U+202E, U+2066..U+2069)"),
    ("sweep \u2066isolated\u2069", "name: must not hold bidi override or isolate characters "
                                   "(U+202A..U+202E, U+2066..U+2069)"),
])
def test_the_relay_refuses_task_names_that_would_steer_a_terminal(
        world: World, name: str, reason: str) -> None:
    answer = world.api.post("/v1/tasks", json={"spec": {"command": "true", "name": name},
                                               "drone": LIAR})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"] == reason
    done = world.pilot.cli("submit", LIAR, "--name", name, "--", "true")
    assert done.returncode == 2 and reason in done.stderr, done.stderr


@pytest.mark.parametrize(("body", "reason"), [
    ({"hostname": f"box{TITLE}"}, "hostname: must be one line without control characters"),
    ({"hostname": "box\x9b2J"}, "hostname: must be one line without control characters"),
    ({"version": f"1.0{BIDI}"}, "version: must not hold bidi override or isolate characters"),
    ({"version": "1" * 101}, "version: is longer than 100 characters"),
    ({"labels": ["gpu", "[/]"]}, "labels: '[/]' is not a label"),
    ({"labels": [f"gpu{TITLE}"]}, "is not a label (1-63 of"),
])
def test_the_relay_refuses_a_polls_hostile_self_description(
        world: World, body: dict[str, Any], reason: str) -> None:
    answer = world.liar.poll(**body)
    assert answer.status_code == 422, answer.text
    assert reason in answer.json()["detail"]
    drone = next(d for d in world.pilot.json("drones") if d["name"] == LIAR)
    assert (drone["hostname"], drone["version"], drone["labels"]) == (
        "box[/]", "[bold red]9", ["gpu"])


def test_the_relay_refuses_a_joining_drones_hostile_hostname(world: World) -> None:
    token = JoinToken.decode(world.relay.enroll("liar-2", ["gpu"]))
    with DroneClient(world.relay.url, new_signer()) as client:
        answer = client.http.post("/v1/worker/init", json={
            "name": token.drone, "secret": token.secret,
            "public_key": client.signer.public_key.openssh(), "labels": [], "slots": 1,
            "hostname": f"box{CLEAR}", "version": "1.0"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"] == "hostname: must be one line without control characters"
    assert "liar-2" not in {d["name"] for d in world.pilot.json("drones")}


def test_a_progress_bar_shows_a_remote_name_as_text(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``dragoon artifact``/``fetch`` label their bar with the remote path: never markup."""
    import asyncio

    from dragoon.cockpit.cli import files, render

    monkeypatch.setattr(render, "is_terminal", lambda stream=None: True)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")

    async def download() -> None:
        async with files.progress_bar(HOSTILE_PATH) as update:
            assert update is not None
            update(10, 100)

    asyncio.run(download())
    seen = capsys.readouterr().err
    assert SHOWN_PATH in SGR.sub("", seen)
    assert "\x07" not in seen and "\x1b]" not in seen and "\u202e" not in seen
