"""No silent waits: ``run``, ``submit`` and ``logs -f`` say why a task has not started, a start
deadline holds on the relay, signals and closed pipes end ``run`` like ssh, and the words of
``DRONE -- COMMAND`` are read strictly. A relay of their own (drones go offline in seconds)
and real ``dragoon drone run`` processes.
"""

from __future__ import annotations

import queue
import shlex
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.cli.conftest import Pilot, make_pilot
from tests.drone.conftest import DroneProcess
from tests.support.relay import RelayProcess, wait_until

BOX = "wait-box"  # a real drone with one slot and the label "waits"


class Lines:
    """A child's stream read line by line in a thread, so a test can wait for a line."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.put(raw.decode(errors="replace"))

    def wait_for(self, text: str, timeout: float = 30) -> str:
        def found() -> str | None:
            while True:
                try:
                    line = self.lines.get_nowait()
                except queue.Empty:
                    break
                self.seen.append(line)
            return next((line for line in self.seen if text in line), None)

        try:
            return wait_until(found, timeout=timeout, interval=0.05, message=text)
        except TimeoutError:
            raise AssertionError(f"no line with {text!r} in {self.seen}") from None

    def rest(self) -> str:
        """Everything the child wrote, once it closed the stream (call after it exited)."""
        self.reader.join(30)
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        return "".join(self.seen)


@pytest.fixture(scope="module")
def wrelay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    root = tmp_path_factory.mktemp("waits-relay")
    config = {"sweep_interval": 0.2, "poll_max_wait": 1, "offline_after": 8}
    with RelayProcess(root / "relay", config=config) as process:
        yield process


@pytest.fixture(scope="module")
def wpilot(wrelay: RelayProcess, tmp_path_factory: pytest.TempPathFactory) -> Pilot:
    pilot = make_pilot(wrelay, tmp_path_factory.mktemp("waits-pilots"), "wanda")
    pilot.login()
    return pilot


def start_drone(relay: RelayProcess, root: Path, name: str, pilot: Pilot, *,
                labels: tuple[str, ...] = (), slots: int = 1) -> DroneProcess:
    drone = DroneProcess(root / name)
    drone.join(relay.enroll(name, labels), slots=slots, labels=labels)
    pilot.trust(drone.data_dir)
    drone.configure(poll_wait=1.0)
    drone.start()
    wait_until(lambda: any(d["name"] == name and d["state"] == "online"
                           for d in pilot.json("drones")),
               timeout=60, interval=0.2, message=f"{name} online")
    return drone


@pytest.fixture(scope="module")
def box(wrelay: RelayProcess, wpilot: Pilot,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    drone = start_drone(wrelay, tmp_path_factory.mktemp("waits-box"), BOX, wpilot,
                        labels=("waits",))
    try:
        yield BOX
    finally:
        drone.stop()


@pytest.fixture(scope="module")
def ghost(wrelay: RelayProcess, wpilot: Pilot, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Joined (``dragoon drone join``) but never run: it never comes online."""
    drone = DroneProcess(tmp_path_factory.mktemp("waits-ghost") / "ghost")
    drone.join(wrelay.enroll("ghost-box", ("ghostly",)), labels=("ghostly",))
    wpilot.trust(drone.data_dir)
    return "ghost-box"


def task_of(pilot: Pilot, task_id: str) -> dict[str, Any]:
    found: dict[str, Any] = pilot.json("task", task_id)
    return found


def wait_state(pilot: Pilot, task_id: str, states: set[str], timeout: float = 30) -> dict[str, Any]:
    return wait_until(lambda: (t := task_of(pilot, task_id))["state"] in states and t,
                      timeout=timeout, interval=0.2, message=f"{task_id} in {states}")


def task_id_in(line: str) -> str:
    return next(word.rstrip(":") for word in line.split() if word.startswith("t-"))


# -- why it waits ----------------------------------------------------------------------------


def test_run_on_a_drone_never_online_says_so_and_ctrl_c_cancels_it(wpilot: Pilot,
                                                                   ghost: str) -> None:
    process = wpilot.popen("run", ghost, "--", "echo should-never-run")
    assert process.stderr is not None and process.stdout is not None
    err = Lines(process.stderr)
    line = err.wait_for("waiting:")
    assert line.startswith("dragoon: t-")
    assert f"waiting: drone {ghost} offline (never came online)" in line
    task_id = task_id_in(line)
    waiting = task_of(wpilot, task_id)["waiting"]
    assert (waiting["reason"], waiting["drone"], waiting["since"]) == ("offline", ghost, None)
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 130
    assert f"Ctrl-C: cancelled {task_id} before it started" in err.rest()
    assert err.seen.count(line) == 1  # one line per reason, not one per poll
    found = task_of(wpilot, task_id)
    assert (found["state"], found["started_at"], found["waiting"]) == ("cancelled", None, None)


def test_task_shows_why_a_queued_task_waits(wpilot: Pilot, ghost: str) -> None:
    task_id = wpilot.ok("submit", ghost, "--", "true").strip()
    try:
        shown = wpilot.ok("task", task_id).splitlines()
        assert [line.split(None, 1)[1] for line in shown if line.startswith("waiting ")] == [
            f"drone {ghost} offline (never came online)"]
        assert task_of(wpilot, task_id)["start_by"] is None
    finally:
        wpilot.ok("cancel", task_id)
    assert "waiting" not in wpilot.ok("task", task_id)
    assert task_of(wpilot, task_id)["waiting"] is None


def test_submit_to_labels_no_drone_has_is_refused_before_anything_is_queued(
        wpilot: Pilot, box: str) -> None:
    """A labels task is sealed to the trusted drones that have the labels when it is
    submitted (docs/cli.md, "Labels"): with none, there is nobody to seal it to."""
    before = len(wpilot.json("tasks"))
    done = wpilot.cli("submit", "--labels", "waits,nosuch", "--", "true")
    assert done.returncode == 1, done.stderr
    assert done.stderr == ("dragoon: no drone in your known_drones has the labels "
                           "waits,nosuch: confirm one (`dragoon drones`) or `dragoon drones "
                           "trust NAME FINGERPRINT`\n")
    assert done.stdout == "" and len(wpilot.json("tasks")) == before


def test_run_on_a_busy_drone_says_so_then_runs_when_a_slot_frees(wpilot: Pilot,
                                                                 box: str) -> None:
    first = wpilot.ok("submit", box, "--", "sleep 60").strip()
    wait_state(wpilot, first, {"running"})
    process = wpilot.popen("run", "--labels", "waits", "--", "echo second")
    assert process.stderr is not None and process.stdout is not None
    err = Lines(process.stderr)
    line = err.wait_for("waiting:")
    assert f"labels waits: drone {box}: 1/1 slots busy" in line
    task_id = task_id_in(line)
    waiting = task_of(wpilot, task_id)["waiting"]
    assert (waiting["reason"], waiting["slots"], waiting["running"]) == ("busy", 1, 1)
    wpilot.ok("drain", box)  # the reason changes: a new line says so
    try:
        assert f"{task_id} waiting: labels waits: drone {box} draining" in err.wait_for(
            "draining")
        wpilot.ok("cancel", first, "--grace", "0")  # frees the slot: still draining
        wait_state(wpilot, first, {"cancelled"})
    finally:
        wpilot.ok("drain", box, "--undo")
    assert process.wait(60) == 0, err.rest()
    assert process.stdout.read() == b"second\n"
    assert [line for line in err.seen if "waiting:" in line] == [
        line, f"dragoon: {task_id} waiting: labels waits: drone {box} draining\n"]


def test_run_on_a_draining_drone_says_so_then_runs_once_undrained(wpilot: Pilot,
                                                                  box: str) -> None:
    wpilot.ok("drain", box)
    try:
        process = wpilot.popen("run", box, "--", "echo after-drain")
        assert process.stderr is not None and process.stdout is not None
        err = Lines(process.stderr)
        line = err.wait_for("waiting:")
        assert f"waiting: drone {box} draining" in line
    finally:
        wpilot.ok("drain", box, "--undo")
    assert process.wait(60) == 0, err.rest()
    assert process.stdout.read() == b"after-drain\n"


def test_run_waits_for_an_offline_drone_and_says_since_when(
        wrelay: RelayProcess, wpilot: Pilot, tmp_path: Path) -> None:
    name = "wait-flaky"
    drone = start_drone(wrelay, tmp_path, name, wpilot)
    try:
        drone.stop()
        wait_until(lambda: any(d["name"] == name and d["state"] == "offline"
                               for d in wpilot.json("drones")),
                   timeout=60, interval=0.2, message=f"{name} offline")
        process = wpilot.popen("run", name, "--", "echo back")
        assert process.stderr is not None and process.stdout is not None
        err = Lines(process.stderr)
        line = err.wait_for("waiting:")
        assert f"waiting: drone {name} offline since " in line and " ago)" in line
        drone.start()  # the task starts when the drone is back
        assert process.wait(60) == 0, err.rest()
        assert process.stdout.read() == b"back\n"
    finally:
        drone.stop()


def test_logs_follow_on_a_queued_task_says_why_and_ctrl_c_leaves_it(wpilot: Pilot,
                                                                    ghost: str) -> None:
    task_id = wpilot.ok("submit", ghost, "--", "true").strip()
    process = wpilot.popen("logs", "-f", task_id)
    assert process.stderr is not None
    err = Lines(process.stderr)
    assert f"{task_id} waiting: drone {ghost} offline" in err.wait_for("waiting:")
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 130
    assert task_of(wpilot, task_id)["state"] == "queued"  # not the follower's to cancel
    wpilot.ok("cancel", task_id)


# -- the start deadline ------------------------------------------------------------------------


def test_start_within_is_enforced_by_the_relay_and_run_exits_255(wpilot: Pilot,
                                                                 ghost: str) -> None:
    done = wpilot.cli("run", ghost, "--start-within", "2s", "--", "true")
    assert done.returncode == 255, done.stderr
    assert f"not started within 2s: drone {ghost} offline" in done.stderr
    task = wpilot.json("tasks", "--limit", "1")[0]
    assert task["state"] == "cancelled" and task["started_at"] is None
    assert task["error"] == f"not started within 2s: drone {ghost} offline"


def test_start_within_holds_when_nobody_watches(wpilot: Pilot, ghost: str) -> None:
    process = wpilot.popen("run", ghost, "--start-within", "3s", "--", "true")
    assert process.stderr is not None
    task_id = task_id_in(Lines(process.stderr).wait_for("waiting:"))
    process.kill()  # the CLI dies: the relay still cancels the task at its deadline
    process.wait(10)
    found = wait_state(wpilot, task_id, {"cancelled"})
    assert found["error"].startswith("not started within 3s")


def test_submit_start_within_waits_and_exits_1_when_it_did_not_start(wpilot: Pilot,
                                                                     ghost: str) -> None:
    done = wpilot.cli("submit", ghost, "--start-within", "1s", "--", "true")
    assert done.returncode == 1, done.stderr
    task_id = done.stdout.strip()
    assert task_id.startswith("t-")
    assert f"{task_id} cancelled: not started within 1s" in done.stderr


def test_submit_start_within_exits_0_once_it_started(wpilot: Pilot, box: str) -> None:
    done = wpilot.cli("submit", box, "--start-within", "1m", "--", "true")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert task_of(wpilot, done.stdout.strip())["started_at"] is not None


def test_start_within_is_a_duration(wpilot: Pilot) -> None:
    done = wpilot.cli("run", "x", "--start-within", "soon", "--", "true")
    assert done.returncode == 2
    assert "--start-within" in done.stderr and "'soon' is not a duration" in done.stderr


# -- signals, pipes and the working directory -------------------------------------------------


def test_sigterm_after_the_start_detaches_in_one_line(wpilot: Pilot, box: str) -> None:
    process = wpilot.popen("run", box, "--", "echo started; sleep 60")
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == b"started\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 128 + signal.SIGTERM
    lines = process.stderr.read().decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dragoon: SIGTERM: detached; t-"), lines
    task_id = task_id_in(lines[0])
    assert task_of(wpilot, task_id)["state"] == "running"
    wpilot.ok("cancel", task_id, "--grace", "0")


def test_sighup_before_the_start_cancels(wpilot: Pilot, ghost: str) -> None:
    process = wpilot.popen("run", ghost, "--", "true")
    assert process.stderr is not None
    err = Lines(process.stderr)
    task_id = task_id_in(err.wait_for("waiting:"))
    process.send_signal(signal.SIGHUP)
    assert process.wait(30) == 128 + signal.SIGHUP
    assert f"SIGHUP: cancelled {task_id} before it started" in err.rest()
    assert task_of(wpilot, task_id)["state"] == "cancelled"


def test_a_closed_stdout_cancels_the_task_and_exits_141(wpilot: Pilot, box: str) -> None:
    line = shlex.join(wpilot.argv("run", "--name", "piped", box, "--",
                                  "seq 1000000; sleep 60"))
    done = subprocess.run(["bash", "-c", f"{line} | head -2; echo \"rc=${{PIPESTATUS[0]}}\""],
                          capture_output=True, text=True, env=wpilot.env, timeout=90,
                          check=False)
    assert done.stdout == "1\n2\nrc=141\n", done.stderr
    assert done.stderr == ""
    task = next(t for t in wpilot.json("tasks", "--limit", "5") if t["name"] == "piped")
    wait_state(wpilot, task["id"], {"cancelled"})


def test_a_missing_cwd_is_dragoons_failure_not_the_tasks(wpilot: Pilot, box: str) -> None:
    done = wpilot.cli("run", box, "--cwd", "/nonexistent-dragoon-dir", "--", "true")
    assert done.returncode == 255, done.stderr
    assert "cwd /nonexistent-dragoon-dir: no such directory" in done.stderr
    task = wpilot.json("tasks", "--limit", "1")[0]
    assert (task["state"], task["exit_code"]) == ("failed", None)
    assert task["error"] == "cwd /nonexistent-dragoon-dir: no such directory"


# -- DRONE -- COMMAND --------------------------------------------------------------------------


@pytest.mark.parametrize(("words", "problem"), [
    (["submit", "box-1", "--labels", "cpu", "--", "true"], "DRONE (box-1) and --labels"),
    (["submit", "--", "true"], "missing DRONE (or --labels)"),
    (["submit", "a", "b", "--", "true"], "one DRONE before `--`, not 2 words"),
    (["run", "box-1", "--"], "no COMMAND"),
    (["run", "box-1", "ls", "-l"], "'-l' after DRONE is ambiguous"),
    (["run", "--labels", "cpu", "nproc"], "DRONE (nproc) and --labels"),
])
def test_words_around_dashdash_are_read_strictly(wpilot: Pilot, words: list[str],
                                                problem: str) -> None:
    before = len(wpilot.json("tasks"))
    done = wpilot.cli(*words)
    assert done.returncode == 2, done.stderr
    assert problem in done.stderr and len(done.stderr.splitlines()) == 1
    assert len(wpilot.json("tasks")) == before  # refused before any request


def test_run_without_dashdash_reads_like_ssh(wpilot: Pilot, box: str) -> None:
    done = wpilot.cli("run", box, "echo", "no", "dashes")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no dashes\n"
    done = wpilot.cli("run", box, "--", "echo", "-n", "x")  # after `--`, options are COMMAND's
    assert (done.returncode, done.stdout) == (0, "x")


def test_a_mistyped_verb_suggests_the_right_one(wpilot: Pilot) -> None:
    done = wpilot.cli("runn", "box", "--", "true")
    assert done.returncode == 2
    assert done.stderr == "dragoon: no verb 'runn'; did you mean run?\n"


# -- other waiting verbs ----------------------------------------------------------------------


def test_fetch_from_an_offline_drone_says_why_it_waits(wpilot: Pilot, ghost: str,
                                                      tmp_path: Path) -> None:
    process = wpilot.popen("fetch", ghost, "/etc/hostname", "-o", str(tmp_path / "got"))
    assert process.stderr is not None
    err = Lines(process.stderr)
    line = err.wait_for("waiting:")
    assert line == (f"dragoon: fetch of /etc/hostname waiting: drone {ghost} offline (never "
                    "came online); it comes when the drone is back (Ctrl-C to give up)\n")
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 130
    assert not (tmp_path / "got").exists()


def test_artifact_of_a_running_task_says_it_is_not_over(wpilot: Pilot, box: str,
                                                       tmp_path: Path) -> None:
    task_id = wpilot.ok("submit", box, "--artifact", "out.txt", "--",
                        "echo x > out.txt; sleep 60").strip()
    try:
        wait_state(wpilot, task_id, {"running"})
        done = wpilot.cli("artifact", task_id, "out.txt", "-o", str(tmp_path / "out.txt"))
        assert done.returncode == 4
        assert done.stderr == (f"dragoon: task {task_id} is running: its artifacts are uploaded "
                               f"when it ends (dragoon logs -f {task_id}, then try again)\n")
    finally:
        wpilot.ok("cancel", task_id, "--grace", "0")
