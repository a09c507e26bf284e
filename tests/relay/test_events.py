"""``GET /v1/events``: task, drone and message changes as server-sent events."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.relay import DroneClient, PilotSession, open_listed


class EventReader:
    """Reads the SSE stream on a thread into a queue of (event, data)."""

    def __init__(self, pilot: PilotSession) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.connected = threading.Event()
        headers = pilot.signed_headers("GET", "/v1/events")
        self._client = httpx.Client(base_url=pilot.url, timeout=30)
        self._thread = threading.Thread(target=self._run, args=(headers,), daemon=True)
        self._thread.start()
        assert self.connected.wait(10)

    def close(self) -> None:
        self._client.close()

    def _run(self, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", "/v1/events", headers=headers) as answer:
                kind = ""
                for line in answer.iter_lines():
                    if line.startswith(": connected"):
                        self.connected.set()
                    elif line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        self.events.put((kind, json.loads(line[6:])))
        except httpx.HTTPError:
            return  # closed by the test

    def next_matching(self, kind: str, test: Callable[[dict[str, Any]], bool],
                      timeout: float = 10) -> dict[str, Any]:
        for event_kind, data in self._drain(timeout):
            if event_kind == kind and test(data):
                return data
        raise AssertionError(f"no {kind} event matched")

    def _drain(self, timeout: float) -> Iterator[tuple[str, dict[str, Any]]]:
        import time

        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                yield self.events.get(timeout=left)
            except queue.Empty:
                return


def test_events_report_task_drone_and_message_changes(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    reader = EventReader(shared_pilot)
    drone = new_drone()
    task = shared_pilot.submit("echo events", drone=drone.name)
    queued = reader.next_matching("task", lambda t: t["id"] == task["id"])
    assert queued["state"] == "queued"
    drone.poll(metrics={"cpu_percent": 12.5})
    online = reader.next_matching("drone", lambda d: d["name"] == drone.name)
    assert online["state"] == "online" and online["metrics"] == {"cpu_percent": 12.5}
    reader.next_matching("task", lambda t: t["id"] == task["id"] and t["state"] == "dispatched")
    drone.message(task["id"], 0, "hello pilot")
    message = reader.next_matching("message", lambda m: m["task"] == task["id"])
    assert "hello pilot" not in json.dumps(message)  # the relay holds it sealed
    assert open_listed(message, shared_pilot.task_key)["text"] == "hello pilot"
    drone.finish(task["id"])
    reader.next_matching("task", lambda t: t["id"] == task["id"] and t["state"] == "succeeded")
    reader.close()


def test_a_finished_task_frees_its_slot_in_a_drone_event(
    shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]
) -> None:
    reader = EventReader(shared_pilot)
    drone = new_drone()
    task = shared_pilot.submit("echo slot", drone=drone.name)
    drone.poll(metrics={"cpu_percent": 1.0})
    busy = reader.next_matching("drone", lambda d: d["name"] == drone.name)
    assert busy["running"] == 1
    drone.finish(task["id"])
    freed = reader.next_matching("drone", lambda d: d["name"] == drone.name)
    assert freed["running"] == 0
    reader.close()


def test_drone_going_offline_is_an_event(tmp_path: Path) -> None:
    from tests.support.relay import RelayProcess

    config = {"sweep_interval": 0.1, "offline_after": 1}
    with RelayProcess(tmp_path / "relay", config=config) as relay:
        pilot = relay.pilot()
        reader = EventReader(pilot)
        drone = relay.drone("fades", pilot=pilot)
        drone.poll()
        reader.next_matching("drone", lambda d: d["name"] == "fades" and d["state"] == "online")
        gone = reader.next_matching("drone", lambda d: d["state"] == "offline")
        assert gone["name"] == "fades"
        reader.close()
