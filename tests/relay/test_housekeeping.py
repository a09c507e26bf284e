"""Expired nonces, challenges, sessions and enrollment tokens are purged; the schema is served;
a task handed out just before a restart is handed out again after it."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.relay import RelayProcess, new_signer, relay_db, wait_until


def _count(data_dir: Path, table: str) -> int:
    with relay_db(data_dir) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608


def test_expired_rows_are_purged(tmp_path: Path) -> None:
    config = {"sweep_interval": 0.1, "nonce_ttl": 1, "challenge_ttl": 2, "session_ttl": 2}
    with RelayProcess(tmp_path / "relay", config=config) as relay:
        pilot = relay.pilot()
        pilot.get("/v1/workers")
        relay.enroll("later", ttl="1s")
        httpx.post(f"{relay.url}/v1/auth/challenge", json={"fingerprint": new_signer().fingerprint})
        for table in ("nonces", "challenges", "sessions", "enrollments"):
            wait_until(lambda t=table: _count(relay.data_dir, t) == 0, timeout=8,
                       message=f"{table} purged")


def test_openapi_document_lists_the_routes(shared_relay: RelayProcess) -> None:
    paths = httpx.get(f"{shared_relay.url}/openapi.json").json()["paths"]
    for path in ("/v1/tasks", "/v1/worker/poll", "/v1/workers/{name}/drain", "/v1/events"):
        assert path in paths


def test_task_handed_out_before_a_restart_is_handed_out_again(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay") as relay:
        pilot = relay.pilot()
        drone = relay.drone("steady", pilot=pilot)
        task = pilot.submit("echo once", drone="steady")
        first = drone.poll().json()["tasks"]  # pretend this answer was lost in the crash
        relay.kill9()
        relay.start()
        again = drone.poll(running=[]).json()["tasks"]
        assert [t["id"] for t in again] == [task["id"]]
        assert again[0]["seq"] > first[0]["seq"]


def test_running_report_restores_a_lost_task(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.1}) as relay:
        pilot = relay.pilot()
        drone = relay.drone("back", pilot=pilot)
        task = pilot.submit("sleep 1000", drone="back", lost_after=1.5)["id"]
        drone.poll()
        drone.poll(running=[task], started=[{"id": task}])
        show = lambda: pilot.get(f"/v1/tasks/{task}").json()  # noqa: E731
        wait_until(lambda: show()["state"] == "lost", timeout=5, message="lost")
        drone.poll(running=[task])
        assert (show()["state"], show()["error"]) == ("running", None)


def test_stop_releases_held_polls_at_once(tmp_path: Path) -> None:
    import threading
    import time

    with RelayProcess(tmp_path / "relay") as relay:
        pilot = relay.pilot()
        drone = relay.drone("holder", pilot=pilot)
        got: dict[str, object] = {}
        thread = threading.Thread(target=lambda: got.update(answer=drone.poll(wait=20)))
        thread.start()
        wait_until(lambda: any(d["state"] == "online"
                               for d in pilot.get("/v1/workers").json()["drones"]),
                   message="poll held")
        begin = time.monotonic()
        assert relay.stop() in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
        thread.join(10)
        assert time.monotonic() - begin < 4
        answer = got["answer"]
        assert isinstance(answer, httpx.Response) and answer.json()["tasks"] == []
