"""Expired nonces, challenges, sessions and enrollment tokens are purged; the schema is served;
a task handed out just before a restart is handed out again after it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from dragoon.shared.constants import MAX_CLOCK_SKEW_SECONDS

from tests.support.relay import (
    RelayProcess,
    configured_database,
    new_signer,
    relay_db,
    wait_until,
)


def _count(data_dir: Path, table: str) -> int:
    with relay_db(data_dir) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608


def _nonces(data_dir: Path) -> dict[str, float]:
    with relay_db(data_dir) as conn:
        return {r["nonce"]: float(r["expires_at"])
                for r in conn.execute("SELECT nonce, expires_at FROM nonces")}


def test_expired_rows_are_purged(tmp_path: Path) -> None:
    """Nonces: a SQLite relay writes only the future-dated ones to the table, a PostgreSQL
    relay every one (relay/pg_nonces.py), each kept until its timestamp could no longer
    be accepted (MAX_CLOCK_SKEW_SECONDS past it, however short nonce_ttl is: there is no
    replay floor to refuse a replay once it is gone). So the sweeper's purge is watched
    on rows planted already expired, beside one that is not; a request's own nonce on
    PostgreSQL must still be held."""
    config = {"sweep_interval": 0.1, "nonce_ttl": 1, "challenge_ttl": 2, "session_ttl": 2}
    with RelayProcess(tmp_path / "relay", config=config) as relay:
        now = time.time()
        with relay_db(relay.data_dir) as conn:
            for nonce, expires_at in (("expired-1", now - 1), ("expired-2", now - 3600),
                                      ("held", now + 3600)):
                conn.execute("INSERT INTO nonces (nonce, expires_at) VALUES (?, ?)",
                             (nonce, expires_at))
        pilot = relay.pilot()  # every request of it signed at `now` or later
        pilot.get("/v1/workers")
        relay.enroll("later", ttl="1s")
        httpx.post(f"{relay.url}/v1/auth/challenge", json={"fingerprint": new_signer().fingerprint})
        wait_until(lambda: not {"expired-1", "expired-2"} & set(_nonces(relay.data_dir)),
                   timeout=8, message="expired nonces purged")
        for table in ("challenges", "sessions", "enrollments"):
            wait_until(lambda t=table: _count(relay.data_dir, t) == 0, timeout=8,
                       message=f"{table} purged")
        held = _nonces(relay.data_dir)
        assert held.pop("held") == now + 3600
        if configured_database(relay.data_dir):  # the pilot's requests' nonces, kept
            assert held, "a PostgreSQL relay records every request's nonce"
            assert min(held.values()) >= now + MAX_CLOCK_SKEW_SECONDS - 1


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
