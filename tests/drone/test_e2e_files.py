"""End to end: messages, artifacts (with traversal and symlinks refused), fetch roots."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from dragoon.shared.spec import SpecError

from tests.drone.conftest import Fleet
from tests.drone.proxy import TamperingProxy
from tests.support.relay import wait_until


@pytest.fixture
def fleet(shared_fleet: Fleet) -> Fleet:
    """These tests never crash the relay: they share one per module (see conftest)."""
    return shared_fleet


def messages(fleet: Fleet, task_id: str) -> list[str]:
    return [m["text"] for m in fleet.pilot.inbox(limit=1000) if m["task"] == task_id]


def test_each_inbox_line_and_each_notify_becomes_one_message(fleet: Fleet):
    # `dragoon notify` is found although the venv is not on the drone's PATH.
    fleet.drone("d1", start=False).start(env={"PATH": "/usr/bin:/bin"})
    task_id = fleet.submit(
        'echo "epoch 1 done" >> "$DRAGOON_INBOX"; '
        'dragoon notify "epoch 2" done; '
        'head -c 5000 /dev/zero | tr "\\0" x >> "$DRAGOON_INBOX"; echo >> "$DRAGOON_INBOX"; '
        'printf "last without newline" >> "$DRAGOON_INBOX"', drone="d1")
    assert fleet.wait_state(task_id)["state"] == "succeeded"
    texts = wait_until(lambda: len(got := messages(fleet, task_id)) == 4 and got,
                     message="four messages")
    assert texts[0] == "epoch 1 done" and texts[1] == "epoch 2 done"
    assert len(texts[2].encode()) <= 4096 and "truncated: 5000 bytes" in texts[2]
    assert texts[3] == "last without newline"


def test_artifacts_are_uploaded_checked_and_escapes_are_refused(fleet: Fleet, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("never leaves the box")
    fleet.drone("d1")
    # A pattern climbing out of the work dir is refused at the pilot's door, by the shared rule; the
    # drone refuses it too when a relay signs one anyway (test_e2e_rejects.py).
    with pytest.raises(SpecError) as escape:
        fleet.pilot.seal({"spec": {"command": "true", "artifacts": ["out/**", "../secret.txt"]},
                          "drone": fleet.name("d1")})
    assert str(escape.value) == ("artifacts: '../secret.txt' holds '..'; patterns stay "
                                 "inside the work dir")
    task_id = fleet.submit(
        "mkdir -p out/sub && echo model > out/sub/m.pt && echo log > out/run.txt && "
        f"ln -s {secret} out/leak.pt && ln -s {tmp_path} out/up",
        drone="d1", artifacts=["out/**"])
    assert fleet.wait_state(task_id)["state"] == "succeeded"
    listed = fleet.pilot.get(f"/v1/tasks/{task_id}/artifact").json()["artifacts"]
    by_path = {a["path"]: a for a in listed}
    assert set(by_path) == {"out/sub/m.pt", "out/run.txt"}
    assert by_path["out/sub/m.pt"]["sha256"] == hashlib.sha256(b"model\n").hexdigest()
    body = fleet.pilot.get(f"/v1/tasks/{task_id}/artifact", params={"path": "out/sub/m.pt"})
    assert body.content == b"model\n"
    refusals = "\n".join(messages(fleet, task_id))
    assert "artifact refused: out/leak.pt: symlink leads out of the work dir" in refusals
    assert "artifact refused: out/up: symlink leads out of the work dir" in refusals


def fetch(fleet: Fleet, drone: str, path: str) -> dict:
    answer = fleet.pilot.post(f"/v1/workers/{fleet.name(drone)}/fetch", json={"path": path})
    assert answer.status_code in (200, 201, 202), answer.text
    fetch_id = answer.json()["id"]
    return wait_until(
        lambda: (f := fleet.pilot.get(f"/v1/fetches/{fetch_id}", params={"wait": 0}).json())
        and f["state"] != "pending" and f, timeout=20, message="fetch settled")


def test_fetch_serves_files_under_the_roots_and_refuses_the_rest(fleet: Fleet, tmp_path: Path):
    root = tmp_path / "results"
    root.mkdir()
    (root / "metrics.csv").write_text("step,loss\n1,0.5\n")
    (tmp_path / "private.txt").write_text("no")
    os.symlink(tmp_path / "private.txt", root / "sneaky")
    fleet.drone("d1", fetch_roots=[str(root)])
    ok = fetch(fleet, "d1", str(root / "metrics.csv"))
    assert ok["state"] == "ready", ok
    content = fleet.pilot.get(f"/v1/fetches/{ok['id']}/content")
    assert content.content == b"step,loss\n1,0.5\n"
    outside = fetch(fleet, "d1", str(tmp_path / "private.txt"))
    assert outside["state"] == "failed" and "outside the fetch roots" in outside["error"]
    via_link = fetch(fleet, "d1", str(root / "sneaky"))
    assert via_link["state"] == "failed" and "outside the fetch roots" in via_link["error"]


def test_fetch_defaults_to_the_drones_work_dirs(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit("echo result > r.txt", drone="d1")
    fleet.wait_state(task_id)
    ok = fetch(fleet, "d1", str(drone.data_dir / "work" / task_id / "r.txt"))
    assert ok["state"] == "ready"
    refused = fetch(fleet, "d1", str(drone.data_dir / "drone_key"))
    assert refused["state"] == "failed" and "outside the fetch roots" in refused["error"]


def test_a_fetch_listed_again_while_it_uploads_is_served_once(fleet: Fleet, tmp_path: Path):
    root = tmp_path / "big"
    root.mkdir()
    blob = os.urandom(1 << 20) * 8
    (root / "weights.bin").write_bytes(blob)
    proxy = TamperingProxy(fleet.relay.url)
    # Every answer lists every pending fetch; here each lists it twice, as two answers would.
    proxy.answer_hook = lambda answer: {**answer,
                                        "fetches": (answer.get("fetches") or []) * 2}
    try:
        drone = fleet.drone("d1", fetch_roots=[str(root)], start=False)
        drone.configure(relay=proxy.url)
        drone.start()
        done = fetch(fleet, "d1", str(root / "weights.bin"))
        assert done["state"] == "ready" and done["size"] == len(blob)
        assert done["sha256"] == hashlib.sha256(blob).hexdigest()
        drone.stop()
        assert drone.log_text().count(f"fetch {done['id']}") == 1  # one upload, nothing else
    finally:
        proxy.close()
