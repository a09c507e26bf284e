"""A pilot's ``GET /v1/events`` stream read on a thread: what it delivered, and when it ended."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.support.hangup import hang_up
from tests.support.relay import PilotSession


class EventStream:
    """Every (event, data) the relay sent, in order; ``ended`` is set when the relay closes."""

    def __init__(self, pilot: PilotSession, *, timeout: float = 60) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.received: list[tuple[float, str, dict[str, Any]]] = []
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.status: int | None = None
        self.error: str | None = None
        self._answer: httpx.Response | None = None
        headers = pilot.signed_headers("GET", "/v1/events")
        self._client = httpx.Client(base_url=pilot.url, timeout=timeout)
        self._thread = threading.Thread(target=self._run, args=(headers,), daemon=True)
        self._thread.start()
        if not self.connected.wait(10):
            raise AssertionError(f"the event stream did not connect: {self.status} {self.error}")

    def close(self) -> None:
        hang_up(self._answer)
        self._client.close()
        self._thread.join(5)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", "/v1/events", headers=headers) as answer:
                self._answer = answer
                self.status = answer.status_code
                if answer.status_code != 200:
                    self.error = answer.read().decode(errors="replace")
                    return
                kind = ""
                for line in answer.iter_lines():
                    if line.startswith(": connected"):
                        self.connected.set()
                    elif line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                        self.received.append((time.monotonic(), kind, data))
                        self.events.put((kind, data))
        except (httpx.HTTPError, RuntimeError) as exc:
            self.error = repr(exc)
        finally:
            self.ended.set()
            self.connected.set()

    def next_matching(self, kind: str, test: Callable[[dict[str, Any]], bool],
                      timeout: float = 10) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                event_kind, data = self.events.get(timeout=left)
            except queue.Empty:
                break
            if event_kind == kind and test(data):
                return data
        raise AssertionError(f"no {kind} event matched within {timeout} s")

    def task_ids(self) -> set[str]:
        return {data["id"] for _, kind, data in self.received if kind == "task"}
