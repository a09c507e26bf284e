"""``dragoon run``, ``submit``, ``tasks``, ``task``, ``logs``, ``cancel`` with a real drone."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import struct
import subprocess
import threading

from dragoon.cockpit.cli.tasks import TASK_JSON_FIELDS

from tests.cli.conftest import Pilot
from tests.support.relay import RelayProcess, fresh_totp, wait_until


def test_run_exits_0_for_a_task_that_succeeds(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("run", drone, "--", "true")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_run_exits_with_the_tasks_own_code(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("run", drone, "--", "exit 3")
    assert done.returncode == 3, done.stderr


def test_run_exits_128_plus_n_when_a_signal_ends_the_task(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("run", drone, "--", "kill -TERM $$")
    assert done.returncode == 128 + signal.SIGTERM, done.stderr


def test_run_keeps_stdout_and_stderr_apart(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("run", drone, "--",
                     "echo out-1; echo err-1 >&2; echo out-2; printf 'err-2' >&2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "out-1\nout-2\n"
    assert done.stderr == "err-1\nerr-2"


def test_run_joins_command_words_with_spaces_as_ssh_does(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("run", drone, "--env", "GREETING=hi there", "--", "echo", "$GREETING",
                     "|", "tr", "a-z", "A-Z")
    assert done.stdout == "HI THERE\n", done.stderr


def test_run_on_labels_finds_a_drone_with_them(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("run", "--labels", "cli", "--", "echo on-labels")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "on-labels\n"


def test_run_streams_output_as_it_is_produced(pilot: Pilot, drone: str) -> None:
    """The first line arrives while the task is still running, not at its end."""
    process = pilot.popen("run", drone, "--name", "streaming", "--",
                          "echo first; sleep 4; echo second")
    assert process.stdout is not None
    assert process.stdout.readline() == b"first\n"
    task = pilot.json("tasks", "--limit", "1")[0]
    assert (task["name"], task["state"]) == ("streaming", "running")
    assert process.wait(30) == 0
    assert process.stdout.read() == b"second\n"


def test_submit_prints_the_id_and_task_tasks_json_show_it(pilot: Pilot, drone: str) -> None:
    task_id = pilot.ok("submit", drone, "--name", "json check", "--", "echo hello").strip()
    assert task_id.startswith("t-") and "\n" not in task_id
    wait_until(lambda: pilot.json("task", task_id)["state"] == "succeeded", timeout=30,
               interval=0.2, message="task succeeded")
    task = pilot.json("task", task_id)
    assert set(TASK_JSON_FIELDS) <= task.keys()  # the fields docs/cli.md promises to keep
    assert (task["id"], task["drone"], task["name"], task["exit_code"]) == (
        task_id, drone, "json check", 0)
    listed = pilot.json("tasks", "--drone", drone)
    assert task_id in [t["id"] for t in listed]
    assert all(t["drone"] == drone for t in listed)
    assert task_id in [t["id"] for t in pilot.json("tasks", "--state", "succeeded")]
    table = pilot.ok("tasks")
    assert table.splitlines()[0].split()[:5] == ["ID", "STATE", "DRONE", "EXIT", "CREATED"]
    assert task_id in table and "\x1b[" not in table
    shown = pilot.ok("task", task_id)
    assert "succeeded" in shown and "echo hello" in shown


def test_logs_prints_each_stream_to_its_own_fd_or_one_when_asked(pilot: Pilot,
                                                                  drone: str) -> None:
    done = pilot.cli("run", drone, "--", "echo to-out; echo to-err >&2")
    assert done.returncode == 0
    task_id = pilot.json("tasks", "--limit", "1")[0]["id"]
    logs = pilot.cli("logs", task_id)
    assert (logs.stdout, logs.stderr) == ("to-out\n", "to-err\n")
    only_err = pilot.cli("logs", task_id, "--stream", "stderr")
    assert (only_err.stdout, only_err.stderr) == ("to-err\n", "")


def test_unknown_task_is_one_line_and_exit_4(pilot: Pilot) -> None:
    for verb in (["task"], ["logs"], ["logs", "-f"], ["cancel"], ["artifacts"]):
        done = pilot.cli(*verb[:1], "t-zzzzzzzzzz", *verb[1:])
        assert done.returncode == 4, (verb, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "dragoon:" in done.stderr


def test_unknown_drone_is_one_line_and_exit_4_or_255_for_run(pilot: Pilot) -> None:
    done = pilot.cli("submit", "no-such-drone", "--", "true")
    assert done.returncode == 4, done.stderr
    assert done.stderr.startswith("dragoon: ") and "no-such-drone" in done.stderr
    done = pilot.cli("run", "no-such-drone", "--", "true")
    assert done.returncode == 255
    assert len(done.stderr.strip().splitlines()) == 1


def test_cancel_ends_a_running_task_and_run_reports_the_signal(pilot: Pilot,
                                                               drone: str) -> None:
    process = pilot.popen("run", drone, "--", "echo started; sleep 60")
    assert process.stdout is not None
    assert process.stdout.readline() == b"started\n"
    task_id = pilot.json("tasks", "--state", "running", "--limit", "1")[0]["id"]
    out = pilot.ok("cancel", task_id, "--grace", "2s")
    assert task_id in out
    assert process.wait(30) == 128 + signal.SIGTERM
    assert pilot.json("task", task_id)["state"] == "cancelled"


def test_ctrl_c_detaches_and_the_task_goes_on(pilot: Pilot, drone: str) -> None:
    process = pilot.popen("run", drone, "--", "echo started; sleep 4; echo later")
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == b"started\n"
    process.send_signal(signal.SIGINT)
    assert process.wait(15) == 130
    hint = process.stderr.read().decode()
    assert "dragoon logs -f t-" in hint
    task_id = hint.split("dragoon logs -f ")[1].split()[0]
    state = pilot.json("task", task_id)["state"]
    assert state in ("running", "dispatched")
    follow = pilot.cli("logs", "-f", task_id, timeout=30)
    assert follow.returncode == 0
    assert follow.stdout == "started\nlater\n"


def test_cancel_on_interrupt_cancels_instead_of_detaching(pilot: Pilot, drone: str) -> None:
    process = pilot.popen("run", "--cancel-on-interrupt", drone, "--",
                          "trap 'echo got-term; exit 7' TERM; echo started; "
                          "sleep 60 & wait")
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == b"started\n"
    process.send_signal(signal.SIGINT)
    code = process.wait(30)
    assert process.stdout.read() == b"got-term\n"
    assert code == 7
    assert "cancelling" in process.stderr.read().decode()


def test_follow_survives_a_relay_restart_without_gaps_or_repeats(
        pilot: Pilot, drone: str, relay: RelayProcess) -> None:
    lines = 60
    process = pilot.popen(
        "run", drone, "--",
        f"for i in $(seq 1 {lines}); do echo line-$i; echo err-$i >&2; sleep 0.05; done")
    assert process.stdout is not None and process.stderr is not None
    received: list[bytes] = []

    def read_out() -> None:
        assert process.stdout is not None
        received.extend(iter(process.stdout.readline, b""))

    reader = threading.Thread(target=read_out)
    reader.start()
    wait_until(lambda: len(received) >= 5, timeout=20, message="first lines")
    relay.restart()
    reader.join(60)
    code = process.wait(30)
    stderr = process.stderr.read().decode()
    assert code == 0, stderr
    assert received == [f"line-{i}\n".encode() for i in range(1, lines + 1)]
    err_lines = [line for line in stderr.splitlines() if not line.startswith("dragoon: ")]
    assert err_lines == [f"err-{i}" for i in range(1, lines + 1)]


def test_logs_follow_resumes_across_a_relay_crash(pilot: Pilot, drone: str,
                                                 relay: RelayProcess) -> None:
    """kill -9 and start again: the follower resumes from its offset on the new process."""
    task_id = pilot.ok("submit", drone, "--",
                       "for i in $(seq 1 40); do echo n-$i; sleep 0.05; done").strip()
    follower = pilot.popen("logs", "-f", task_id, "--stream", "stdout")
    assert follower.stdout is not None
    first = follower.stdout.readline()
    relay.kill9()
    relay.start()
    rest = follower.stdout.read()
    assert follower.stderr is not None
    assert follower.wait(30) == 0, follower.stderr.read().decode() + relay.stderr_text()
    assert (first + rest).decode().split() == [f"n-{i}" for i in range(1, 41)]


def test_task_json_is_a_single_document(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("run", drone, "--", "exit 0")
    assert done.returncode == 0
    out = pilot.ok("tasks", "--json", "--limit", "3")
    assert isinstance(json.loads(out), list)


def test_run_exit_code_255_is_dragoons_own_failure(pilot: Pilot, drone: str) -> None:
    env = {**pilot.env, "XDG_STATE_HOME": str(pilot.home / "nowhere")}
    done = subprocess.run(pilot.argv("run", drone, "--", "exit 3"), env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 255
    assert done.stderr.strip() == "dragoon: not logged in: run `dragoon login`"


class DroppingProxy:
    """A real TCP forwarder to the relay whose open connections can be cut at once.

    It stands for the network between pilot and relay: ``drop()`` resets every
    connection in flight, as a Wi-Fi hand-over or a NAT time-out would.
    ``cut_next_answer()`` does so the moment the relay's next answer arrives,
    withholding that answer: the cut then lands on a request in flight by
    construction, not by the luck of timing (a cut between two requests is
    healed silently by a fresh connection, and proves less).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.drops = 0
        self.lock = threading.Lock()
        self.upstreams: set[socket.socket] = set()
        self.cut_armed = threading.Event()
        self.cut_done = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.open += [client, upstream]
                self.upstreams.add(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if source in self.upstreams and self.cut_armed.is_set():
                    self.cut_armed.clear()
                    self.drop()  # the answer is withheld: its request dies in flight
                    self.cut_done.set()
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        with self.lock:
            doomed, self.open = self.open, []
            self.drops += 1
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv()
                sock.close()

    def cut_next_answer(self, timeout: float = 20) -> None:
        """Reset every connection when the relay's next answer arrives, and wait for it."""
        self.cut_done.clear()
        self.cut_armed.set()
        if not self.cut_done.wait(timeout):
            raise TimeoutError("no answer came through the proxy to cut")

    def close(self) -> None:
        self.listener.close()
        self.drop()


def test_run_survives_network_drops_without_gaps_or_repeats(
        fresh_pilot: Pilot, drone: str, relay: RelayProcess) -> None:
    proxy = DroppingProxy(int(relay.url.rsplit(":", 1)[1]))
    try:
        fresh_pilot.ok("login", "--relay", f"http://127.0.0.1:{proxy.port}", "--key",
                       str(fresh_pilot.key), "--totp", fresh_totp(fresh_pilot.totp_secret))
        process = fresh_pilot.popen(
            "run", drone, "--",
            "for i in $(seq 1 50); do echo line-$i; echo err-$i >&2; sleep 0.04; done")
        assert process.stdout is not None and process.stderr is not None
        received: list[bytes] = []
        reader = threading.Thread(
            target=lambda: received.extend(iter(process.stdout.readline, b"")))  # type: ignore[union-attr]
        reader.start()
        for count in (5, 20, 35):
            try:
                wait_until(lambda count=count: len(received) >= count, timeout=20,
                           message=f"{count} lines")
            except TimeoutError:
                process.kill()
                raise AssertionError(process.stderr.read().decode()) from None
            proxy.cut_next_answer()
        reader.join(60)
        code = process.wait(30)
        stderr = process.stderr.read().decode()
    finally:
        proxy.close()
    assert code == 0, stderr
    assert received == [f"line-{i}\n".encode() for i in range(1, 51)]
    err_lines = [line for line in stderr.splitlines() if not line.startswith("dragoon: ")]
    assert err_lines == [f"err-{i}" for i in range(1, 51)]
    assert proxy.drops >= 3
    assert "retrying" in stderr, "a request cut in flight went unreported"
