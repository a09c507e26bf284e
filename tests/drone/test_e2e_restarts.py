"""Long runs must survive a relay crash and a drone crash without losing or doubling a byte."""

from __future__ import annotations

import hashlib
import json
import os
import signal

import psutil
from dragoon.drone.release import MARGIN, STEP
from dragoon.drone.state import read_json
from dragoon.shared.order import OrderReader

from tests.drone.conftest import Fleet
from tests.support.relay import wait_until

COUNT = 400
# Prints 1..COUNT, one line every few ms, then exits 7: slow enough to crash things mid-run.
COUNTER = f"for i in $(seq 1 {COUNT}); do echo line-$i; echo err-$i >&2; sleep 0.005; done; exit 7"


def lines(data: bytes, prefix: str) -> list[str]:
    return [line for line in data.decode().splitlines() if line.startswith(prefix)]


def expected(prefix: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(1, COUNT + 1)]


def relay_bytes(fleet: Fleet, task_id: str) -> int:
    return int(fleet.task(task_id)["stdout_size"])


def test_relay_kill9_and_restart_mid_task_loses_and_doubles_nothing(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit(COUNTER, drone="d1")
    wait_until(lambda: relay_bytes(fleet, task_id) > 500, message="some output at the relay")
    fleet.relay.kill9()
    spool = drone.data_dir / "tasks" / task_id / "stdout"
    # The task runs on while the relay is down: output keeps spooling on the drone.
    wait_until(lambda: spool.exists() and b"line-200\n" in spool.read_bytes(), timeout=30,
             message="output spooling while the relay is down")
    fleet.relay.start()
    task = fleet.wait_state(task_id, timeout=60)
    assert task["state"] == "failed" and task["exit_code"] == 7
    assert lines(fleet.output(task_id), "line-") == expected("line-")
    assert lines(fleet.output(task_id, "stderr"), "err-") == expected("err-")
    assert "relay unreachable" in drone.log_text()
    assert drone.process is not None and drone.process.poll() is None  # never exits on it
    assert drone.log_text().count("relay unreachable") <= 2  # a line per change, not per retry
    wait_until(lambda: not (drone.data_dir / "tasks" / task_id).exists(),
             message="spool removed once acknowledged")


def test_drone_kill9_mid_task_the_task_survives_and_its_real_exit_is_reported(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit(COUNTER, drone="d1")
    task = fleet.wait_state(task_id, "running")
    pid = task.get("pid")
    wait_until(lambda: relay_bytes(fleet, task_id) > 300, message="some output at the relay")
    drone.kill9()
    proc = drone.data_dir / "tasks" / task_id / "proc.json"
    record = json.loads(proc.read_text())
    assert pid is None or pid == record["pid"]
    # The task does not notice: it is still running with the drone gone.
    assert psutil.pid_exists(record["pid"])
    spool = drone.data_dir / "tasks" / task_id / "stdout"
    wait_until(lambda: b"line-150\n" in spool.read_bytes(), timeout=30,
             message="task writing on with no drone")
    drone.start()
    task = fleet.wait_state(task_id, timeout=60)
    assert task["state"] == "failed" and task["exit_code"] == 7, task
    assert lines(fleet.output(task_id), "line-") == expected("line-")
    assert lines(fleet.output(task_id, "stderr"), "err-") == expected("err-")
    assert "re-adopted" in drone.log_text()


def test_a_task_that_ends_while_the_drone_is_down_reports_its_real_exit(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit("echo before; read -t 30 < <(tail -f /dev/null) ; exit 5",
                           drone="d1")
    fleet.wait_state(task_id, "running")
    drone.kill9()
    exit_file = drone.data_dir / "tasks" / task_id / "exit.json"
    record = (drone.data_dir / "tasks" / task_id / "proc.json").read_text()
    pgid = json.loads(record)["pid"]
    os.killpg(pgid, signal.SIGKILL)  # the task ends while no drone is watching
    wait_until(exit_file.exists, message="the wrapper records the exit with no drone")
    drone.start()
    task = fleet.wait_state(task_id)
    assert task["state"] == "failed" and task["signal"] == 9
    assert fleet.output(task_id) == b"before\n"


def chain(size: int) -> bytes:
    """Deterministic bytes that no block of zeros or repeat could pass for."""
    digest = hashlib.sha256(b"seed")
    out = bytearray()
    while len(out) < size:
        digest = hashlib.sha256(digest.digest())
        out += digest.digest() * 2048
    return bytes(out[:size])


def chain_command(size: int) -> str:
    script = ("import hashlib,sys\n"
              "h=hashlib.sha256(b'seed')\n"
              f"left={size}\n"
              "while left:\n"
              "    h=hashlib.sha256(h.digest()); block=h.digest()*2048; block=block[:left]\n"
              "    sys.stdout.buffer.write(block); left-=len(block)\n")
    return f"python3 -c \"{script}\""


def test_a_fast_writer_arrives_byte_for_byte(fleet: Fleet):
    fleet.drone("d1")
    size = 12 * 1024 * 1024 + 12345  # many chunks in flight at once, and a ragged end
    task_id = fleet.submit(chain_command(size), drone="d1")
    task = fleet.wait_state(task_id, timeout=60)
    assert task["state"] == "succeeded" and task["stdout_size"] == len(fleet.stored(task_id))
    assert fleet.output(task_id, whole=True) == chain(size)


def test_acknowledged_output_gives_its_disk_back_while_the_task_runs(fleet: Fleet, tmp_path):
    drone = fleet.drone("d1")
    size = MARGIN + STEP + 3 * 1024 * 1024 + 777
    gate = tmp_path / "gate"
    task_id = fleet.submit(f"{chain_command(size)}; while [ ! -e {gate} ]; do sleep 0.05; done",
                           drone="d1", timeout=120)
    task_dir = drone.data_dir / "tasks" / task_id

    def all_sealed_and_held() -> bool:
        # The sealer's checkpoint (drone/sealer.py) names the plaintext sealed and the
        # sealed bytes that hold it; the relay then holds exactly those.
        mark = read_json(task_dir / "stdout.rec.json") or {}
        return mark.get("offset") == size and relay_bytes(fleet, task_id) == mark.get("size")

    wait_until(all_sealed_and_held, timeout=60, message="all sealed, and the relay holds it all")
    spool = (task_dir / "stdout").stat()
    sealed = (task_dir / "stdout.rec").stat()
    assert spool.st_size == size  # offsets unchanged for the task and the sealer
    assert spool.st_blocks * 512 < size - STEP + (1 << 20)  # but sealed bytes left disk
    assert sealed.st_size == relay_bytes(fleet, task_id)
    assert sealed.st_blocks * 512 < sealed.st_size - STEP + (1 << 20)  # and shipped ones
    gate.touch()
    assert fleet.wait_state(task_id)["state"] == "succeeded"
    assert fleet.output(task_id, whole=True) == chain(size)


def test_a_reboot_ends_a_running_task_as_failed_with_the_reason(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit("sleep 300", drone="d1")
    fleet.wait_state(task_id, "running")
    drone.kill9()
    proc_path = drone.data_dir / "tasks" / task_id / "proc.json"
    record = json.loads(proc_path.read_text())
    # What a reboot leaves: no task, no wrapper, and a different boot time.
    os.killpg(record["pid"], signal.SIGKILL)
    os.kill(record["wrapper_pid"], signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(record["wrapper_pid"]) or
             psutil.Process(record["wrapper_pid"]).status() == psutil.STATUS_ZOMBIE,
             message="wrapper gone")
    (drone.data_dir / "tasks" / task_id / "exit.json").unlink(missing_ok=True)
    record["boot_time"] -= 3600
    proc_path.write_text(json.dumps(record))
    drone.start()
    task = fleet.wait_state(task_id)
    assert task["state"] == "failed" and "rebooted" in task["error"]


def test_a_wrapper_killed_from_outside_is_reported_not_hung(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit("sleep 300", drone="d1")
    fleet.wait_state(task_id, "running")
    record = json.loads((drone.data_dir / "tasks" / task_id / "proc.json").read_text())
    os.kill(record["wrapper_pid"], signal.SIGKILL)
    os.killpg(record["pid"], signal.SIGKILL)
    task = fleet.wait_state(task_id)
    assert task["state"] == "failed" and "vanished" in task["error"]


def test_a_task_accepted_just_before_a_crash_is_never_started_and_is_ended(fleet: Fleet,
                                                                            tmp_path):
    drone = fleet.drone("d1", start=False)
    marker = tmp_path / "ran"
    task_id = fleet.submit(f"touch {marker}", drone="d1")
    # What a crash right after the durable accept, before the start, leaves behind.
    (drone.data_dir / "state.json").write_text(json.dumps({"last_seq": 0,
                                                           "accepted": [task_id]}))
    drone.start()
    task = fleet.wait_state(task_id)
    assert task["state"] == "failed" and "not started again" in task["error"]
    assert not marker.exists()


def test_a_graceful_drone_restart_leaves_the_task_running(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit("echo a; read -t 3 < <(tail -f /dev/null); echo b; exit 4",
                           drone="d1")
    fleet.wait_state(task_id, "running")
    record = json.loads((drone.data_dir / "tasks" / task_id / "proc.json").read_text())
    assert drone.stop() == 0  # SIGTERM: what systemctl restart sends with KillMode=process
    assert psutil.pid_exists(record["pid"])
    assert not (drone.data_dir / "tasks" / task_id / "exit.json").exists()
    drone.start()
    task = fleet.wait_state(task_id)
    assert task["state"] == "failed" and task["exit_code"] == 4
    assert fleet.output(task_id) == b"a\nb\n"


def test_a_cancel_sent_while_the_drone_is_down_is_carried_out_after_its_restart(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit("sleep 300", drone="d1", grace=1)
    fleet.wait_state(task_id, "running")
    record = json.loads((drone.data_dir / "tasks" / task_id / "proc.json").read_text())
    drone.kill9()
    answer = fleet.pilot.post(f"/v1/tasks/{task_id}/cancel", json={"grace": 1})
    assert answer.status_code == 200, answer.text
    assert psutil.pid_exists(record["pid"])  # nobody has acted on it yet
    drone.start()
    task = fleet.wait_state(task_id)
    assert task["state"] == "cancelled" and task["signal"] == 15


def test_the_order_stream_survives_a_drone_kill9_byte_for_byte(fleet: Fleet, tmp_path):
    """The order is shipped like stdout/stderr: resumed by offset after a restart, exactly once.

    The task holds on at the end (a gate) so the wrapper's own order file can be
    compared with the relay's copy before the spool is removed."""
    drone = fleet.drone("d1")
    gate = tmp_path / "gate"
    task_id = fleet.submit(f"{COUNTER.removesuffix('; exit 7')}; "
                           f"while [ ! -e {gate} ]; do sleep 0.05; done; exit 7", drone="d1")
    wait_until(lambda: fleet.task(task_id).get("order_size", 0) > 200,
               message="some order at the relay")
    drone.kill9()
    spool = drone.data_dir / "tasks" / task_id
    wait_until(lambda: b"err-300\n" in (spool / "stderr").read_bytes(), timeout=30,
               message="the task writing on with no drone")
    drone.start()
    wait_until(lambda: b"err-400\n" in fleet.output(task_id, "stderr"), timeout=60,
               message="all the output at the relay")
    local = (spool / "order").read_bytes()
    wait_until(lambda: fleet.output(task_id, "order") == local, timeout=30,
               message="the relay holding the drone's whole order file")
    gate.touch()
    task = fleet.wait_state(task_id, timeout=60)
    assert task["state"] == "failed" and task["exit_code"] == 7
    order = fleet.output(task_id, "order", whole=True)
    assert order == local and task["order_size"] == len(fleet.stored(task_id, "order"))
    reader = OrderReader()
    runs = reader.feed(order)
    assert reader.header_seen and reader.broken is None
    for stream in ("stdout", "stderr"):  # every byte counted once: none lost, none twice
        assert sum(r.size for r in runs if r.stream == stream) == len(
            fleet.output(task_id, stream, whole=True))
