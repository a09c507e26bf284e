"""End to end: FIFOs, sockets and planted files never freeze a real drone.

Each test keeps a second task printing a line every 50 ms and checks that its
output still reaches the relay after the hostile file was met, and that the
drone still answers the next order: a drone whose event loop is stuck in an
``open()`` would do neither.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.drone.conftest import Fleet
from tests.drone.proxy import TamperingProxy
from tests.support.relay import wait_until

TICKER = "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo tick $i; sleep 0.05; done"


@pytest.fixture
def fleet(shared_fleet: Fleet) -> Fleet:
    """These tests never crash the relay: they share one per module (see conftest)."""
    return shared_fleet


def messages(fleet: Fleet, task_id: str) -> list[str]:
    return [m["text"] for m in fleet.pilot.inbox(limit=1000) if m["task"] == task_id]


def fetch(fleet: Fleet, drone: str, path: str) -> dict:
    answer = fleet.pilot.post(f"/v1/workers/{fleet.name(drone)}/fetch", json={"path": path})
    assert answer.status_code in (200, 201, 202), answer.text
    fetch_id = answer.json()["id"]
    return wait_until(
        lambda: (f := fleet.pilot.get(f"/v1/fetches/{fetch_id}", params={"wait": 0}).json())
        and f["state"] != "pending" and f, timeout=20, message="fetch settled")


def start_ticker(fleet: Fleet, drone: str) -> str:
    task_id = fleet.submit(TICKER, drone=drone)
    wait_until(lambda: b"tick 3\n" in fleet.output(task_id), timeout=20, message="ticker ticks")
    return task_id


def still_streams(fleet: Fleet, task_id: str) -> None:
    """More of the ticker's output reaches the relay from now on."""
    seen = len(fleet.output(task_id))
    wait_until(lambda: len(fleet.output(task_id)) > seen + 20, timeout=20,
               message="the ticker's output keeps arriving")


def stop(fleet: Fleet, task_id: str) -> None:
    answer = fleet.pilot.post(f"/v1/tasks/{task_id}/cancel", json={})
    assert answer.status_code == 200, answer.text
    assert fleet.wait_state(task_id)["state"] == "cancelled"


def online(fleet: Fleet, drone: str) -> bool:
    answer = fleet.pilot.get("/v1/workers")
    assert answer.status_code == 200, answer.text
    return any(row["name"] == fleet.name(drone) and row["state"] == "online"
               for row in answer.json()["drones"])


# ----- fetch -----

def test_fetching_a_fifo_is_refused_while_other_output_keeps_streaming(fleet: Fleet,
                                                                        tmp_path: Path):
    root = tmp_path / "results"
    root.mkdir()
    os.mkfifo(root / "pipe")
    os.symlink(root / "pipe", root / "metrics.csv")
    (root / "ok.txt").write_text("fine\n")
    fleet.drone("d1", fetch_roots=[str(root)], slots=2)
    ticker = start_ticker(fleet, "d1")
    try:
        refused = fetch(fleet, "d1", str(root / "pipe"))
        assert refused["state"] == "failed", refused
        assert "not a regular file: FIFO" in fleet.pilot.fetch_error(refused)
        via_link = fetch(fleet, "d1", str(root / "metrics.csv"))
        assert via_link["state"] == "failed"
        assert "not a regular file: FIFO" in fleet.pilot.fetch_error(via_link)
        still_streams(fleet, ticker)
        served = fetch(fleet, "d1", str(root / "ok.txt"))
        assert served["state"] == "ready", served
        assert online(fleet, "d1")
    finally:
        stop(fleet, ticker)


# ----- artifacts -----

def test_artifact_globs_over_a_fifo_a_socket_and_a_link_to_them_refuse_each_with_its_kind(
        fleet: Fleet):
    fleet.drone("d1")
    task_id = fleet.submit(
        "mkdir out && echo model > out/m.pt && mkfifo out/pipe && ln -s pipe out/link && "
        "python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"out/sock\")'",
        drone="d1", artifacts=["out/*"])
    assert fleet.wait_state(task_id)["state"] == "succeeded"
    assert list(fleet.pilot.artifacts(task_id)) == ["out/m.pt"]
    said = "\n".join(wait_until(lambda: len(got := messages(fleet, task_id)) >= 3 and got,
                                message="three refusals"))
    assert "artifact refused: out/pipe: not a regular file: FIFO" in said
    assert "artifact refused: out/link: not a regular file: FIFO" in said
    assert "artifact refused: out/sock: not a regular file: socket" in said


def test_an_artifact_swapped_for_a_fifo_after_it_was_sealed_is_sent_as_it_was_read(
        fleet: Fleet):
    proxy = TamperingProxy(fleet.relay.url)
    try:
        # The first upload attempt has opened, checked and sealed the regular file into the
        # task's spool when it reaches the proxy: the swap happens right then, and that
        # attempt is refused (503). The retry sends the same sealed spool: the file as it
        # was checked and read, and the FIFO is never opened. (A swap between selection
        # and sealing is refused at the open: tests/drone/test_hostile_files.py.)
        swapped: list[str] = []
        drone = fleet.drone("d1", slots=2, start=False)

        def swap_on_first_upload(path: str) -> bool:
            if not path.startswith("/v1/worker/blob") or swapped:
                return False
            artifact = drone.data_dir / "work" / task_id / "out" / "m.pt"
            artifact.unlink()
            os.mkfifo(artifact)
            swapped.append(path)
            return True

        proxy.unavailable = swap_on_first_upload
        drone.configure(relay=proxy.url)
        drone.start()
        ticker = start_ticker(fleet, "d1")
        task_id = fleet.submit("mkdir out && echo model > out/m.pt", drone="d1",
                               artifacts=["out/*"])
        wait_until(lambda: swapped, timeout=30, message="the first upload attempt")
        assert fleet.wait_state(task_id, timeout=40)["state"] == "succeeded"
        assert fleet.pilot.artifact_bytes(task_id, "out/m.pt") == b"model\n"
        still_streams(fleet, ticker)
        stop(fleet, ticker)
    finally:
        proxy.close()


# ----- the inbox and the task dir, which the task can write to -----

@pytest.mark.parametrize(("replace", "kind"), [
    ('rm "$DRAGOON_INBOX"; mkfifo "$DRAGOON_INBOX"', "FIFO"),
    ('ln -sf /dev/zero "$DRAGOON_INBOX"', "symlink"),
])
def test_an_inbox_replaced_by_a_fifo_or_a_link_does_not_freeze_the_drone(
        fleet: Fleet, replace: str, kind: str):
    fleet.drone("d1", slots=2)
    ticker = start_ticker(fleet, "d1")
    try:
        # The refused artifact (a link out of the work dir) makes the drone say something to
        # the pilot after the swap.
        # The swap comes once the drone has read the first line (inbox.json says how far).
        task_id = fleet.submit(
            'ln -s /etc/hostname out-link; '
            'echo "before" >> "$DRAGOON_INBOX"; D="$(dirname "$DRAGOON_INBOX")"; '
            """until grep -qs '"offset": 7' "$D/inbox.json"; do sleep 0.05; done; """
            f"{replace}; sleep 0.5; echo done", drone="d1", artifacts=["out-link"])
        assert fleet.wait_state(task_id, timeout=30)["state"] == "succeeded"
        assert fleet.output(task_id) == b"done\n"
        said = wait_until(lambda: len(got := messages(fleet, task_id)) >= 3 and got,
                          message="the line and the drone's two notices")
        assert said[0] == "before"
        assert any(f"not a regular file: {kind}" in text for text in said), said
        assert any("artifact refused: out-link" in text for text in said), said
        still_streams(fleet, ticker)
    finally:
        stop(fleet, ticker)


def test_a_huge_inbox_is_read_up_to_its_cap_without_freezing_the_drone(fleet: Fleet):
    fleet.drone("d1", slots=2)
    ticker = start_ticker(fleet, "d1")
    try:
        # 1 TiB, sparse: a line that never ends, written in no time.
        task_id = fleet.submit('echo first >> "$DRAGOON_INBOX"; truncate -s 1T "$DRAGOON_INBOX"'
                               "; sleep 1", drone="d1")
        assert fleet.wait_state(task_id, timeout=30)["state"] == "succeeded"
        said = wait_until(lambda: len(got := messages(fleet, task_id)) >= 3 and got,
                          message="the line, the cut line, the cap notice")
        assert said[0] == "first"
        assert any("inbox is over" in text for text in said), said
        still_streams(fleet, ticker)
    finally:
        stop(fleet, ticker)


def test_a_fifo_planted_as_exit_json_does_not_freeze_the_drone(fleet: Fleet):
    fleet.drone("d1", slots=2)
    ticker = start_ticker(fleet, "d1")
    try:
        task_id = fleet.submit('mkfifo "$(dirname "$DRAGOON_INBOX")/exit.json"; sleep 1; '
                               "echo survived", drone="d1")
        assert fleet.wait_state(task_id, timeout=30)["state"] == "succeeded"
        assert fleet.output(task_id) == b"survived\n"
        still_streams(fleet, ticker)
    finally:
        stop(fleet, ticker)


def test_a_spool_replaced_by_a_fifo_mid_run_still_ships_what_the_task_wrote(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit(
        'echo first; while [ ! -e go ]; do sleep 0.05; done; '
        'D="$(dirname "$DRAGOON_INBOX")"; rm "$D/stdout"; mkfifo "$D/stdout"; echo second',
        drone="d1")
    wait_until(lambda: fleet.output(task_id) == b"first\n", timeout=20, message="first line")
    (drone.data_dir / "work" / task_id / "go").touch()
    assert fleet.wait_state(task_id, timeout=30)["state"] == "succeeded"
    assert fleet.output(task_id) == b"first\nsecond\n"
