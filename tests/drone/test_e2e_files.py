"""End to end: messages, artifacts (with traversal and symlinks refused), fetch roots."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from dragoon.shared import e2e
from dragoon.shared.sealed_files import open_meta
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
    by_path = fleet.pilot.artifacts(task_id)
    assert set(by_path) == {"out/sub/m.pt", "out/run.txt"}
    assert by_path["out/sub/m.pt"]["sha256"] == hashlib.sha256(b"model\n").hexdigest()
    assert fleet.pilot.artifact_bytes(task_id, "out/sub/m.pt") == b"model\n"
    # The relay knows them by index: the path is no name it can ask for.
    assert fleet.pilot.get(f"/v1/tasks/{task_id}/artifact",
                           params={"path": "out/sub/m.pt"}).status_code == 404
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
    assert fleet.pilot.open_fetched(ok, content.content) == b"step,loss\n1,0.5\n"
    outside = fetch(fleet, "d1", str(tmp_path / "private.txt"))
    assert outside["state"] == "failed"
    assert "outside the fetch roots" in fleet.pilot.fetch_error(outside)
    assert "outside" not in outside["error"]  # sealed: it names the drone's folders
    via_link = fetch(fleet, "d1", str(root / "sneaky"))
    assert via_link["state"] == "failed"
    assert "outside the fetch roots" in fleet.pilot.fetch_error(via_link)


def test_fetch_defaults_to_the_drones_work_dirs(fleet: Fleet):
    drone = fleet.drone("d1")
    task_id = fleet.submit("echo result > r.txt", drone="d1")
    fleet.wait_state(task_id)
    ok = fetch(fleet, "d1", str(drone.data_dir / "work" / task_id / "r.txt"))
    assert ok["state"] == "ready"
    refused = fetch(fleet, "d1", str(drone.data_dir / "drone_key"))
    assert refused["state"] == "failed"
    assert "outside the fetch roots" in fleet.pilot.fetch_error(refused)


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
        assert done["state"] == "ready" and done["size"] == e2e.blob_size(len(blob))
        meta = open_meta(fleet.pilot.fetch_stream(done["id"]), done["meta"])
        assert (meta["size"], meta["sha256"]) == (len(blob), hashlib.sha256(blob).hexdigest())
        drone.stop()
        assert drone.log_text().count(f"fetch {done['id']}") == 1  # one upload, nothing else
    finally:
        proxy.close()


def test_an_artifact_sealed_before_a_drone_crash_is_sent_as_the_same_bytes_after_it(
        fleet: Fleet):
    """The drone seals an artifact once, into the task dir: killed with SIGKILL as its first
    upload reaches the relay, then started again, it uploads that very spool (a resend the
    relay takes as one), not a new sealing under new nonces."""
    proxy = TamperingProxy(fleet.relay.url)
    spooled: list[bytes] = []
    try:
        drone = fleet.drone("d1", start=False)
        drone.configure(relay=proxy.url)

        def crash_on_first_upload(path: str) -> bool:
            if not path.startswith("/v1/worker/blob") or spooled:
                return False
            spool = drone.data_dir / "tasks" / task_id / "artifact-0.sealed"
            spooled.append(spool.read_bytes())
            drone.kill9()
            return True

        proxy.unavailable = crash_on_first_upload
        drone.start()
        task_id = fleet.submit("mkdir out && head -c 200000 /dev/urandom > out/w.bin",
                               drone="d1", artifacts=["out/*"])
        wait_until(lambda: spooled, timeout=30, message="the first upload attempt")
        drone.start()
        assert fleet.wait_state(task_id, timeout=40)["state"] == "succeeded"
        artifact = fleet.pilot.artifacts(task_id)["out/w.bin"]
        assert artifact["stored_size"] == len(spooled[0]) == e2e.blob_size(200000)
        stored = fleet.pilot.get(f"/v1/tasks/{task_id}/artifact",
                                 params={"path": artifact["name"]}).content
        assert stored == spooled[0]
        assert len(fleet.pilot.artifact_bytes(task_id, "out/w.bin")) == 200000
    finally:
        proxy.close()
